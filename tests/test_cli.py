"""Tests for the ``fastbp`` command line (``fastbp.cli.main`` and ``python -m fastbp``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import fastbp
from fastbp.checkpoint import load_checkpoint
from fastbp.cli import main
from fastbp.datasets import mnist as mnist_mod


from conftest import SHARED, needs_fashion, needs_mnist_test


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Nothing read from or written to the real cache; downloads go to a closed local port."""
    monkeypatch.setenv("FASTBP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FASTBP_DATA_DIR", raising=False)
    monkeypatch.setenv("FASTBP_MIRROR", "http://127.0.0.1:9/")
    monkeypatch.setattr(mnist_mod, "SYSTEM_DIRS", ())


def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


@needs_fashion
def test_train_out_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "--dataset", "fashion-mnist", "--data-dir", str(SHARED), "--no-progress", "--hidden", "20"]
    assert main(base + ["--iters", "120", "--batch-size", "50", "--seed", "4", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "epoch" in text and "train acc" in text and "test acc" in text
    assert "done: 120 steps" in text and "steps/s" in text and "compile" in text
    ckpt = load_checkpoint(out / "checkpoint.npz")
    assert ckpt.step == 120 and ckpt.meta["dataset"] == "fashion-mnist" and ckpt.meta["batch_size"] == 50
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    # Resume: dataset, hidden size, batch size and seed come from the checkpoint.
    assert main(["train", "--data-dir", str(SHARED), "--no-progress", "--resume", str(out / "checkpoint.npz"),
                 "--iters", "150", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "resuming at step 120" in text and "done: 30 steps" in text
    assert load_checkpoint(out / "checkpoint.npz").step == 150
    # Conflicting settings are refused in one line.
    assert main(["train", "--resume", str(out / "checkpoint.npz"), "--hidden", "30", "--iters", "200"]) == 2
    assert "--hidden 30 conflicts" in one_line_error(capsys)
    assert main(["train", "--resume", str(out / "checkpoint.npz"), "--data-dir", str(SHARED), "--iters", "150"]) == 2
    assert "already has 150 steps" in one_line_error(capsys)


@needs_fashion
def test_unwritable_out_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["train", "--dataset", "fashion-mnist", "--data-dir", str(SHARED), "--no-progress", "--iters", "3",
                 "--hidden", "5", "--out", str(blocker / "run")]) == 2
    assert "file" in one_line_error(capsys)


@needs_fashion
def test_train_threads_calls_set_num_threads(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(fastbp, "set_num_threads", calls.append)
    assert main(["train", "--dataset", "fashion-mnist", "--data-dir", str(SHARED), "--no-progress",
                 "--iters", "5", "--hidden", "5", "--threads", "1"]) == 0
    assert calls == [1]


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["train", "--dataset", "kmnist"], "invalid choice: 'kmnist'"),
        (["train", "--batch-size", "-5"], "--batch-size: must be a positive integer"),
        (["train", "--batch-size", "ten"], "--batch-size: expected a positive integer"),
        (["train", "--lr", "0"], "--lr: must be a positive"),
        (["train", "--epochs", "2", "--iters", "3"], "not allowed with argument"),
        (["train", "--dtype", "float16"], "invalid choice: 'float16'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "required: COMMAND"),
    ],
)
def test_bad_arguments_one_line_exit_2(argv, fragment, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert fragment in one_line_error(capsys)


def test_missing_data_offline_one_line(tmp_path, capsys):
    # Nothing anywhere and the mirror unreachable: one line saying where to put the files.
    assert main(["train", "--data-dir", str(tmp_path / "empty")]) == 2
    err = one_line_error(capsys)
    assert "not found" in err and "Put the four files" in err
    assert main(["train", "--no-download"]) == 2
    assert "download=False" in one_line_error(capsys)


def test_missing_resume_checkpoint(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nope.npz")]) == 2
    assert "nope.npz" in one_line_error(capsys)


@needs_mnist_test
def test_gradcheck_on_real_digits(capsys):
    assert main(["gradcheck", "--data-dir", str(SHARED), "--no-download", "--hidden", "20"]) == 0  # small: fast
    text = capsys.readouterr().out
    for name in ("W1", "b1", "W2", "b2"):
        assert f"\n{name} " in text
    assert "all within tolerance" in text


@needs_mnist_test
def test_mnist_train_offline_is_a_clear_error(tmp_path, capsys):
    # A data folder with MNIST's test split only (built here: the check must not depend on
    # what the shared folder holds).
    only_test = tmp_path / "data" / "mnist"
    only_test.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (only_test / name).symlink_to(SHARED / "mnist" / name)
    assert main(["train", "--data-dir", str(only_test.parent), "--no-download"]) == 2
    assert "train-images-idx3-ubyte.gz not found" in one_line_error(capsys)


def test_python_dash_m(tmp_path):
    env = {**os.environ, "FASTBP_CACHE_DIR": str(tmp_path), "FASTBP_MIRROR": "http://127.0.0.1:9/"}
    ok = subprocess.run([sys.executable, "-m", "fastbp", "--help"], capture_output=True, text=True, timeout=120,
                        env=env)
    assert ok.returncode == 0 and "train" in ok.stdout and "gradcheck" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "fastbp", "train", "--batch-size", "-1"], capture_output=True,
                         text=True, timeout=120, env=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


# -- chapter 6: MultiLayerNet(Extend) and optimizers ------------------------------------------

FASHION = ["train", "--dataset", "fashion-mnist", "--data-dir", str(SHARED), "--no-progress"]


@needs_fashion
def test_train_multilayer_out_resume_and_conflicts(tmp_path, capsys, monkeypatch):
    import fastbp.plotting as P

    titles = []
    plot = P.plot_history
    monkeypatch.setattr(P, "plot_history",
                        lambda h, path, title=None, **kw: titles.append(title) or plot(h, path, **kw))
    out = tmp_path / "run"
    ckpt_path = out / "checkpoint.npz"
    assert main(FASHION + ["--hidden", "20,20,20,20", "--optimizer", "Adam", "--batchnorm", "--dropout", "0.1",
                           "--weight-decay", "0.001", "--init", "xavier", "--batch-size", "3000", "--iters", "30",
                           "--seed", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    net_text = "784-20x4-10 relu + BatchNorm + dropout 0.1 + weight decay 0.001, Adam lr=0.001"
    assert f"{net_text}, batch 3000, float32" in text and "done: 30 steps" in text
    assert titles == [f"fashion-mnist: {net_text}, batch 3000"]
    ckpt = load_checkpoint(ckpt_path)
    assert ckpt.step == 30 and ckpt.network == "MultiLayerNetExtend" and ckpt.meta["optimizer"] == "Adam"
    assert ckpt.meta["weight_init_std"] == "xavier" and ckpt.optimizer_state["iter"] == 30
    # Resume: network, optimizer, batch size and seed from the checkpoint; same flags are fine.
    assert main(["train", "--data-dir", str(SHARED), "--no-progress", "--resume", str(ckpt_path),
                 "--optimizer", "adam", "--hidden", "20,20,20,20", "--iters", "40", "--out", str(out)]) == 0
    assert "resuming at step 30" in capsys.readouterr().out
    assert load_checkpoint(ckpt_path).optimizer_state["iter"] == 40
    for flags, fragment in [(["--optimizer", "sgd"], "--optimizer sgd conflicts with the checkpoint's adam"),
                            (["--hidden", "20,20"], "--hidden 20,20 conflicts with the checkpoint's 20,20,20,20"),
                            (["--activation", "sigmoid"], "--activation sigmoid conflicts"),
                            (["--init", "he"], "--init he conflicts with the checkpoint's xavier"),
                            (["--dropout", "0.5"], "--dropout 0.5 conflicts"),
                            (["--weight-decay", "0"], "--weight-decay 0.0 conflicts")]:
        assert main(["train", "--resume", str(ckpt_path), "--iters", "50"] + flags) == 2
        assert fragment in one_line_error(capsys)


@needs_fashion
def test_default_run_is_the_two_layer_net(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(FASHION + ["--hidden", "10", "--iters", "3", "--out", str(out)]) == 0
    assert "784-10-10 relu, SGD lr=0.1, batch 100, float32" in capsys.readouterr().out
    ckpt = load_checkpoint(out / "checkpoint.npz")
    assert ckpt.network == "TwoLayerNet" and ckpt.meta["version"] == 1 and ckpt.meta["lr"] == 0.1
    # A two-layer checkpoint with chapter-6 flags: a clear error, not another network.
    for flags, fragment in [(["--optimizer", "adam"], "--optimizer adam conflicts with the checkpoint's sgd (a "),
                            (["--batchnorm"], "--batchnorm conflicts with the checkpoint's TwoLayerNet, which has no"),
                            (["--init", "0.01"], "--init 0.01 conflicts with the checkpoint's none")]:
        assert main(["train", "--resume", str(out / "checkpoint.npz"), "--iters", "5"] + flags) == 2
        assert fragment in one_line_error(capsys)


@needs_fashion
def test_nan_loss_is_one_line_and_keeps_the_checkpoint(tmp_path, capsys, monkeypatch):
    from fastbp.multilayer import MultiLayerNet

    calls = []
    step = MultiLayerNet.train_step

    def nan_at_step_15(self, x, t, optimizer):
        calls.append(1)  # the warm-up's step on a throwaway network is call 1
        loss = step(self, x, t, optimizer)
        return float("nan") if len(calls) == 16 else loss

    monkeypatch.setattr(MultiLayerNet, "train_step", nan_at_step_15)
    out = tmp_path / "run"
    assert main(FASHION + ["--hidden", "5,5", "--batch-size", "6000", "--iters", "30", "--seed", "0",
                           "--out", str(out)]) == 2
    err = one_line_error(capsys)
    assert err.startswith("fastbp: error: training diverged at step 15: the mini-batch loss is nan; "
                          "the checkpoint of step 10 is kept"), err
    assert load_checkpoint(out / "checkpoint.npz").step == 10


@pytest.mark.parametrize("argv, fragment", [
    (["--hidden", ""], "--hidden: expected a positive integer or a comma-separated list"),
    (["--hidden", "100,x"], "--hidden: expected a positive integer or a comma-separated list"),
    (["--hidden", "100,,100"], "--hidden: expected"),
    (["--hidden", "100,0"], "--hidden: hidden sizes must be positive integers"),
    (["--hidden", "-5"], "--hidden: hidden sizes must be positive integers"),
    (["--activation", "tanh"], "invalid choice: 'tanh'"),
    (["--init", "lecun"], "--init: expected he, xavier or a positive number, got 'lecun'"),
    (["--init", "0"], "--init: expected he, xavier or a positive number, got 0"),
    (["--init", "nan"], "--init: expected he, xavier or a positive number"),
    (["--optimizer", "adamw"], "invalid choice: 'adamw'"),
    (["--weight-decay", "-0.1"], "--weight-decay: must be a finite number >= 0"),
    (["--weight-decay", "inf"], "--weight-decay: must be a finite number >= 0"),
    (["--dropout", "1"], "--dropout: must be in [0, 1)"),
    (["--dropout", "-0.5"], "--dropout: must be in [0, 1)"),
    (["--dropout", "half"], "--dropout: expected a number in [0, 1)"),
    (["--lr", "-1"], "--lr: must be a positive"),
])
def test_bad_chapter6_flags_one_line_exit_2(argv, fragment, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train"] + argv)
    assert info.value.code == 2
    assert fragment in one_line_error(capsys)


def test_hidden_and_init_parsing():
    from fastbp.cli import build_parser

    def parsed(*argv):
        return build_parser().parse_args(["train", *argv])

    assert parsed("--hidden", "50").hidden == 50            # the two-layer network
    assert parsed("--hidden", "100,100,").hidden == [100, 100]
    assert parsed("--hidden", " 7 , 8").hidden == [7, 8]
    assert parsed().hidden is None and parsed().batchnorm is None and parsed().optimizer is None
    assert parsed("--init", "He").init == "he" and parsed("--init", "0.05").init == 0.05
    assert parsed("--optimizer", "RMSprop").optimizer == "rmsprop" and parsed("--batchnorm").batchnorm is True


# -- resume: where checkpoints go, and bad checkpoints -------------------------------------------

@needs_fashion
def test_resume_without_out_keeps_writing_to_the_checkpoint(tmp_path, capsys):
    ckpt = tmp_path / "mine.npz"
    first = FASHION + ["--hidden", "8,8", "--optimizer", "adam", "--batch-size", "6000", "--iters", "15",
                       "--eval-every", "4", "--seed", "1"]
    assert main(first + ["--out", str(tmp_path)]) == 0
    (tmp_path / "checkpoint.npz").rename(ckpt)
    (tmp_path / "curves.png").unlink()
    capsys.readouterr()
    assert main(["train", "--data-dir", str(SHARED), "--no-progress", "--resume", str(ckpt), "--iters", "22"]) == 0
    text = capsys.readouterr().out
    said = [line for line in text.splitlines() if "no --out" in line]
    assert said == [f"fastbp train: no --out: checkpoints go to {ckpt}, the file resumed from"], text
    assert f"wrote {ckpt}" in text and not list(tmp_path.glob("*.png"))  # no --out: no curves
    saved = load_checkpoint(ckpt)
    # 22 steps, evaluated every 4 (the checkpoint's setting) and at the end; the 15-step
    # run's own last evaluation is gone, as in the uninterrupted run.
    assert saved.step == 22 and saved.history.epoch_step == [4, 8, 12, 16, 20, 22]
    assert saved.optimizer_state["iter"] == 22


def two_layer_checkpoint(path, **meta):
    from fastbp.checkpoint import History, save_checkpoint

    return save_checkpoint(path, fastbp.TwoLayerNet(784, 20, 10, dtype="float32", seed=0), History(),
                           seed=0, batch_size=100, lr=0.1, iterations=50, dataset="fashion-mnist", **meta)


def test_bad_checkpoints_are_one_line_errors(tmp_path, capsys):
    import json

    import numpy as np

    good = two_layer_checkpoint(tmp_path / "good.npz")
    raw = good.read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 3])
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with np.load(good) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["param_W1"] = arrays["param_W1"].astype(np.float64)  # meta still says float32
    with open(tmp_path / "dtype.npz", "wb") as fh:
        np.savez(fh, **arrays)
    meta = json.loads(str(arrays["meta"][()]))
    arrays["param_W1"] = arrays["param_W1"].astype(np.float32)
    arrays["meta"] = np.array(json.dumps({**meta, "batch_size": -3}))
    with open(tmp_path / "settings.npz", "wb") as fh:
        np.savez(fh, **arrays)
    for name, fragment in [("cut.npz", "not a readable fastbp checkpoint"),
                           ("junk.npz", "not a readable fastbp checkpoint"),
                           ("dtype.npz", "W1 is float64 of shape (784, 20), expected float32"),
                           ("settings.npz", "meta batch_size is -3")]:
        assert main(["train", "--resume", str(tmp_path / name), "--iters", "60"]) == 2
        err = one_line_error(capsys)
        assert name in err and fragment in err, err


def test_checkpoint_of_another_network_or_optimizer_is_one_line(tmp_path, capsys):
    from fastbp.checkpoint import History, save_checkpoint

    two = two_layer_checkpoint(tmp_path / "two.npz")
    net = fastbp.MultiLayerNetExtend(784, [20, 20], 10, use_batchnorm=True, dtype="float32", seed=0)
    deep = save_checkpoint(tmp_path / "deep.npz", net, History(), optimizer=fastbp.optimizers.Adam(), seed=0)
    for path, flags, fragment in [
            (two, ["--hidden", "20,20"], "--hidden 20,20 conflicts with the checkpoint's 20 (a TwoLayerNet)"),
            (two, ["--optimizer", "momentum"], "--optimizer momentum conflicts with the checkpoint's sgd"),
            (deep, ["--optimizer", "rmsprop"], "--optimizer rmsprop conflicts with the checkpoint's adam"),
            (deep, ["--hidden", "50"], "--hidden 50 conflicts with the checkpoint's 20,20"),
            (deep, ["--dtype", "float64"], "--dtype float64 conflicts with the checkpoint's float32")]:
        assert main(["train", "--resume", str(path), "--iters", "60"] + flags) == 2
        assert fragment in one_line_error(capsys)


@needs_fashion
def test_ctrl_c_then_resume_equals_the_uninterrupted_run(tmp_path, capsys, monkeypatch):
    """Ctrl-C during the evaluation of step 20 (the 5th accuracy call: two in the warm-up, two
    at step 10), exit status 130 and
    how to resume; `--resume` alone then finishes the run, whose checkpoint equals that of a
    run never interrupted."""
    import numpy as np

    import fastbp.train as T

    flags = FASHION + ["--hidden", "10,10", "--optimizer", "rmsprop", "--batchnorm", "--batch-size", "6000",
                       "--iters", "33", "--seed", "3"]
    accuracy, calls = T.accuracy, []

    def interrupted_fifth(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return accuracy(*args, **kwargs)

    monkeypatch.setattr(T, "accuracy", interrupted_fifth)
    assert main(flags + ["--out", str(tmp_path / "a")]) == 130
    ckpt = tmp_path / "a" / "checkpoint.npz"
    assert f"fastbp: interrupted; resume with: fastbp train --resume {ckpt}" in capsys.readouterr().err
    assert load_checkpoint(ckpt).step == 20
    monkeypatch.setattr(T, "accuracy", accuracy)
    assert main(["train", "--data-dir", str(SHARED), "--no-progress", "--resume", str(ckpt)]) == 0
    assert main(flags + ["--out", str(tmp_path / "b")]) == 0
    a, b = load_checkpoint(ckpt), load_checkpoint(tmp_path / "b" / "checkpoint.npz")
    assert a.step == b.step == 33 and a.history.epoch_step == b.history.epoch_step == [10, 20, 30, 33]
    assert (a.history.step_loss, a.history.epoch_loss, a.history.test_acc) == (
        b.history.step_loss, b.history.epoch_loss, b.history.test_acc)
    for k in b.net_state:
        np.testing.assert_array_equal(a.net_state[k], b.net_state[k])
    for k in b.optimizer_state:
        np.testing.assert_array_equal(a.optimizer_state[k], b.optimizer_state[k])
