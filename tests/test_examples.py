"""The examples run as scripts and print what the book prints."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


# -- chapter 6 (examples/ch06): each script, shortened, on Fashion-MNIST ----------------------

CH06 = EXAMPLES / "ch06"
from conftest import SHARED as SHARED_DATA, needs_fashion  # noqa: E402

#: Each example with options that make it run in a few seconds.
CH06_RUNS = {
    "optimizer_compare_mnist.py": ["--iters", "30", "--batch-size", "32"],
    "weight_init_compare.py": ["--iters", "30"],
    "overfit_weight_decay.py": ["--epochs", "5"],
    "overfit_dropout.py": ["--epochs", "5", "--quiet"],
    "batch_norm_test.py": ["--scales", "2", "--epochs", "2", "--train-size", "200"],
    "batch_norm_gradient_check.py": ["--hidden", "3", "3", "--batch-size", "4"],
    "hyperparameter_optimization.py": ["--trials", "4", "--epochs", "3", "--num-cpus", "1"],
}


def run_ch06(name, args, out, dataset=("--dataset", "fashion-mnist"), env=None):
    cmd = [sys.executable, str(CH06 / name), *dataset, "--data-dir", str(SHARED_DATA),
           "--out", str(out), "--threads", "1", *args]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})}, cwd=out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def check_png(path):
    """`path` is a PNG with a drawing in it (not one colour)."""
    from PIL import Image
    assert path.is_file() and path.stat().st_size > 0, path
    with Image.open(path) as img:
        assert img.format == "PNG"
        w, h = img.size
        assert w >= 300 and h >= 200, img.size
        colours = img.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 10, f"{path} is nearly blank"


def test_ch06_runs_cover_every_example():
    assert sorted(CH06_RUNS) == sorted(p.name for p in CH06.glob("[!_]*.py"))


@needs_fashion
@pytest.mark.parametrize("name", sorted(CH06_RUNS))
def test_ch06_example(name, tmp_path):
    out = run_ch06(name, CH06_RUNS[name], tmp_path)
    check_png(tmp_path / (Path(name).stem + ".png"))
    assert f"figure: {tmp_path / (Path(name).stem + '.png')}" in out
    if name in ("optimizer_compare_mnist.py", "weight_init_compare.py"):
        losses = re.findall(r"^(SGD|Momentum|AdaGrad|Adam|std=0\.01|Xavier|He): (\S+)$", out,
                            re.M)
        assert len(losses) == (4 if name.startswith("optimizer") else 3), out
        assert all(0 < float(v) < 10 for _, v in losses), out
    elif name.startswith("overfit"):
        accs = re.findall(r"train acc:(\S+), test acc:(\S+)", out)
        if name == "overfit_weight_decay.py":  # overfit_dropout.py runs --quiet
            assert len(accs) == 5, out
            assert all(0 <= float(a) <= 1 and 0 <= float(b) <= 1 for a, b in accs), out
        else:
            assert not accs, out
    elif name == "batch_norm_test.py":
        assert out.count("==============") == 2 * 2 and "2/2" in out, out
        assert len(re.findall(r"^epoch:\d+ \| \S+ - \S+$", out, re.M)) == 2 * 2, out
    elif name == "hyperparameter_optimization.py":  # the book's lines, best first
        best = re.findall(r"^Best-(\d+)\(val acc:(\S+)\) \| lr:\S+, weight decay:\S+$", out, re.M)
        assert [int(i) for i, _ in best] == [1, 2, 3, 4], out
        assert [float(v) for _, v in best] == sorted((float(v) for _, v in best), reverse=True), out
    else:  # the gradient check, on 4 images: every difference at rounding level
        diffs = dict(re.findall(r"^(\w+):(\S+)$", out, re.M))
        assert set(diffs) == {f"{k}{i}" for k in "Wb" for i in (1, 2, 3)} | {
            f"{k}{i}" for k in ("gamma", "beta") for i in (1, 2)}, out
        assert all(0 <= float(v) < 1e-6 for v in diffs.values()), out


@needs_fashion
def test_ch06_falls_back_to_fashion_mnist(tmp_path):
    # The shared folder lacks MNIST's training images and the mirror is unreachable: the
    # default dataset is MNIST, so the example says so and uses Fashion-MNIST.
    env = {"FASTBP_CACHE_DIR": str(tmp_path / "cache"), "FASTBP_MIRROR": "http://127.0.0.1:9/",
           "FASTBP_DATA_DIR": ""}
    out = run_ch06("overfit_weight_decay.py", ["--epochs", "1"], tmp_path, dataset=(), env=env)
    assert "note: " in out and "using Fashion-MNIST instead" in out, out
    check_png(tmp_path / "overfit_weight_decay.png")


def test_ch06_missing_data_is_a_clear_error(tmp_path):
    from fastbp.datasets.mnist import SYSTEM_DIRS
    if any((d / "mnist" / "train-images-idx3-ubyte.gz").is_file() for d in SYSTEM_DIRS):
        pytest.skip("MNIST is installed system-wide here")
    env = {"FASTBP_CACHE_DIR": str(tmp_path / "cache"), "FASTBP_MIRROR": "http://127.0.0.1:9/",
           "FASTBP_DATA_DIR": ""}
    cmd = [sys.executable, str(CH06 / "weight_init_compare.py"), "--dataset", "mnist",
           "--data-dir", str(tmp_path / "nothing"), "--out", str(tmp_path)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env}, cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "mnist file" in proc.stderr, proc.stderr
    assert not list(tmp_path.glob("*.png"))
