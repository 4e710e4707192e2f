"""The examples run as scripts and print what the book prints."""
import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(name):
    return subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True,
                          text=True, check=True, timeout=600).stdout


def test_buy_apple():
    assert run("buy_apple.py") == "price: 220\ndApple: 2.2\ndApple_num: 110\ndTax: 200\n"


def test_buy_apple_orange():
    assert run("buy_apple_orange.py") == (
        "price: 715\ndApple: 2.2\ndApple_num: 110\ndOrange: 3.3000000000000003\n"
        "dOrange_num: 165\ndTax: 650\n")


def test_gradient_check_example():
    out = run("gradient_check.py")
    rows = dict(re.findall(r"^(W1|b1|W2|b2):(\S+)$", out, re.M))
    assert set(rows) == {"W1", "b1", "W2", "b2"}, out
    assert all(0 <= float(v) < 1e-6 for v in rows.values()), out
