"""SimpleConvNet (issue 17): the book's initial weights, loss and gradients, the fused
training step against the book's layer path and Adam, the book's ch07 scripts on fastbp's
layers, parameter files without pickle, states, threads and bad input."""
import os
import pickle

import numba
import numpy as np
import pytest

from conftest import SHARED, compiled_only, needs_fashion, needs_mnist_test
from book import ROOT, book
from fastbp import SimpleConvNet, optimizers
from fastbp.trainer import Trainer

SMALL = dict(input_dim=(1, 10, 10),
             conv_param={"filter_num": 4, "filter_size": 3, "pad": 1, "stride": 1},
             hidden_size=7, output_size=5)


def _batch(rng, n=6, shape=(1, 10, 10), classes=5):
    return rng.random((n,) + shape), rng.integers(0, classes, n)


def _book_net(**kw):
    book("common.layers")
    import sys
    ch07 = os.path.join(os.path.abspath(ROOT), "ch07")
    if ch07 not in sys.path:
        sys.path.append(ch07)
    return book("simple_convnet").SimpleConvNet(**kw)


@pytest.mark.parametrize("kw", [SMALL, dict(input_dim=(2, 9, 9), conv_param={
    "filter_num": 3, "filter_size": 2, "pad": 0, "stride": 1}, hidden_size=6, output_size=4)])
def test_matches_the_books_network(rng, kw):
    np.random.seed(5)
    ours = SimpleConvNet(**kw)
    np.random.seed(5)
    theirs = _book_net(**kw)
    for key in theirs.params:
        np.testing.assert_array_equal(ours.params[key], theirs.params[key])
    C = kw["input_dim"][0]
    x, t = _batch(rng, 5, kw["input_dim"], kw["output_size"])
    np.testing.assert_allclose(ours.predict(x), theirs.predict(x), rtol=1e-12, atol=1e-14)
    g, gb = ours.gradient(x, t), theirs.gradient(x, t)
    fused = ours.fused_gradient(x, t)
    for key in gb:
        np.testing.assert_allclose(g[key], gb[key], rtol=1e-9, atol=1e-15)
        np.testing.assert_allclose(fused[key], gb[key], rtol=1e-9, atol=1e-15)
    assert ours.accuracy(x, t) == theirs.accuracy(x, t, batch_size=5)
    assert C == ours.params["W1"].shape[1]


def _gradient_check(module, seed):
    """ch07/gradient_check.py with `module`'s SimpleConvNet: |numerical - backprop|."""
    np.random.seed(seed)
    network = module.SimpleConvNet(input_dim=(1, 10, 10), conv_param={
        "filter_num": 10, "filter_size": 3, "pad": 0, "stride": 1}, hidden_size=10,
        output_size=10, weight_init_std=0.01)
    X = np.random.rand(100).reshape((1, 1, 10, 10))
    T = np.array([1]).reshape((1, 1))  # as the script passes it
    grad_num = network.numerical_gradient(X, T)
    grad = network.gradient(X, T)
    return {key: np.abs(grad_num[key] - grad[key]) for key in grad_num}


def _book_module():
    _book_net(**SMALL)
    return book("simple_convnet")


#: Plain-Python kernels (NUMBA_DISABLE_JIT=1) take minutes per numerical gradient: one seed.
_JIT = not numba.config.DISABLE_JIT


@pytest.mark.parametrize("seed", [0, 1, 3] if _JIT else [0])
def test_books_gradient_check_runs_on_fastbps_layers(seed):
    """ch07/simple_convnet.py with its imports swapped to fastbp, under gradient_check.py.

    The numerical gradient (h = 1e-4) is off wherever a perturbation crosses a ReLU or a
    max-pool kink: the book's own code reports mean differences of 1e-6 to 1e-4 for W1,
    b1, b2 at these seeds. So: most elements agree to 1e-8, and each mean difference is
    the book's own, to rounding."""
    book("common.layers")
    import types
    with open(os.path.join(ROOT, "ch07", "simple_convnet.py"), encoding="utf-8") as f:
        src = f.read()
    for old, new in (("from common.layers import *", "from fastbp.layers import *"),
                     ("from common.gradient import numerical_gradient",
                      "from fastbp.gradient import numerical_gradient")):
        assert old in src
        src = src.replace(old, new)
    ours = types.ModuleType("simple_convnet_on_fastbp")
    exec(compile(src, "simple_convnet.py", "exec"), ours.__dict__)  # noqa: S102
    import fastbp.layers
    assert ours.Convolution is fastbp.layers.Convolution
    theirs = _gradient_check(_book_module(), seed)
    native = types.SimpleNamespace(SimpleConvNet=SimpleConvNet)
    for module in (ours, native) if _JIT else (ours,):
        mine = _gradient_check(module, seed)
        for key in mine:
            assert np.median(mine[key]) < 1e-8, key
            assert abs(mine[key].mean() - theirs[key].mean()) < (
                1e-3 * theirs[key].mean() + 2e-7), key


@compiled_only
@pytest.mark.parametrize("n", [1, 6])  # 1: the one-row fused backward and update
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_train_step_matches_books_adam(rng, dtype, n):
    ours = SimpleConvNet(**SMALL, dtype=dtype, seed=3)
    ref = SimpleConvNet(**SMALL, dtype=np.float64, seed=3)
    adam_book = book("common.optimizer").Adam(lr=0.01)
    opt = optimizers.Adam(lr=0.01)
    for _ in range(4):
        x, t = _batch(rng, n)
        loss_ref = ref.loss(x, t)
        adam_book.update(ref.params, ref.gradient(x, t))
        loss = ours.train_step(x, t, opt)
        tol = 1e-10 if dtype == np.float64 else 2e-4
        assert abs(loss - loss_ref) < tol * max(1, abs(loss_ref))
    for key in ref.params:
        np.testing.assert_allclose(ours.params[key], ref.params[key],
                                   rtol=1e-8 if dtype == np.float64 else 2e-3,
                                   atol=1e-10 if dtype == np.float64 else 1e-5)


@compiled_only
def test_one_row_step_with_a_hidden_layer_wider_than_the_pooled_output(rng):
    """The one-row step lists the non-zero inputs of both affine layers in the tail of its
    int32 work buffer: it must hold the wider one (here the 40 hidden units, not the 8
    pooled values). Under NUMBA_BOUNDSCHECK=1 (CI) a short buffer is an IndexError."""
    cfg = dict(input_dim=(1, 6, 6), hidden_size=40, output_size=3,
               conv_param={"filter_num": 2, "filter_size": 3, "pad": 0, "stride": 1})
    ours = SimpleConvNet(**cfg, seed=4)
    ref = SimpleConvNet(**cfg, seed=4)
    opt, opt_ref = optimizers.Adam(lr=0.01), book("common.optimizer").Adam(lr=0.01)
    for _ in range(3):
        x, t = _batch(rng, 1, shape=(1, 6, 6), classes=3)
        opt_ref.update(ref.params, ref.gradient(x, t))
        ours.train_step(x, t, opt)
    for key in ref.params:
        np.testing.assert_allclose(ours.params[key], ref.params[key], rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("n", [1, 2])
def test_fused_gradient_of_one_and_two_rows(rng, n):
    """Batches of one row take the loop products of the affine layers (no BLAS)."""
    net = SimpleConvNet(**SMALL, seed=2)
    x, t = _batch(rng, n)
    g, fused = net.gradient(x, t), net.fused_gradient(x, t)
    for key in g:
        np.testing.assert_allclose(fused[key], g[key], rtol=1e-9, atol=1e-15)


@compiled_only
@pytest.mark.parametrize("n", [1, 6])
@pytest.mark.parametrize("name", ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop"])
def test_train_step_with_other_optimizers(rng, name, n):
    ours = SimpleConvNet(**SMALL, seed=1)
    ref = SimpleConvNet(**SMALL, seed=1)
    opt = getattr(optimizers, name)(lr=0.05)
    opt_ref = getattr(book("common.optimizer"), name)(lr=0.05)
    for _ in range(3):
        x, t = _batch(rng, n)
        opt_ref.update(ref.params, ref.gradient(x, t))
        ours.train_step(x, t, opt)
    for key in ref.params:
        np.testing.assert_allclose(ours.params[key], ref.params[key], rtol=1e-9, atol=1e-12)


@compiled_only
@pytest.mark.parametrize("n", [1, 40])  # 1: W2's fused backward and update on the pool
def test_book_sized_step_is_thread_count_independent(rng, n):
    x = rng.random((n, 1, 28, 28), dtype=np.float32)
    t = rng.integers(0, 10, n)
    before = numba.get_num_threads()
    results = []
    try:
        for threads in (1, before):
            numba.set_num_threads(threads)
            net = SimpleConvNet(dtype=np.float32, seed=0)
            opt = optimizers.Adam()
            losses = [net.train_step(x, t, opt) for _ in range(2)]
            results.append((losses, net.get_state()))
    finally:
        numba.set_num_threads(before)
    assert results[0][0] == results[1][0]
    for key in results[0][1]:
        np.testing.assert_array_equal(results[0][1][key], results[1][1][key])


def test_step_runs_its_products_on_fewer_blas_threads_and_restores_them(rng, monkeypatch):
    """CONVNET_BLAS_THREADS: the step's sgemm calls run on one OpenBLAS thread (spinning
    idle OpenBLAS workers slowed the convolution's Numba threads); the count is restored
    after the step, after an evaluation and after a rejected batch."""
    import fastbp.convnet as convnet_module
    from fastbp.kernels import _blas, gemm_threads, set_gemm_threads
    if _blas.blas_binding() == "scipy-cython-blas":
        pytest.skip("the scipy-cython-blas binding offers no thread count (threadpoolctl's job)")
    before = gemm_threads()
    seen = []
    step = convnet_module.KC.convnet_step
    monkeypatch.setattr(convnet_module.KC, "convnet_step",
                        lambda *a: (seen.append(gemm_threads()), step(*a))[1])
    try:
        set_gemm_threads(2)
        net = SimpleConvNet(**SMALL, seed=0)
        x, t = _batch(rng, n=30)
        net.train_step(x, t, optimizers.SGD())
        assert seen == [1] and gemm_threads() == 2
        net.train_step(x[:1], t[:1], optimizers.SGD())  # one row calls no BLAS: left alone
        assert seen[-1] == 2 and gemm_threads() == 2
        net.accuracy(x, t)
        assert gemm_threads() == 2
        with pytest.raises(ValueError, match="labels in t"):
            net.train_step(x, np.full(30, 5), optimizers.SGD())
        assert gemm_threads() == 2
        set_gemm_threads(1)  # already at the step's count: left alone
        net.train_step(x, t, optimizers.SGD())
        assert gemm_threads() == 1
    finally:
        set_gemm_threads(before)


@compiled_only
def test_trainer_and_flat_rows(rng):
    x = rng.random((30, 100)).astype(np.float32)  # flat rows are reshaped to (N, 1, 10, 10)
    t = rng.integers(0, 5, 30)
    net = SimpleConvNet(**SMALL, dtype=np.float32, seed=0)
    np.random.seed(0)
    trainer = Trainer(net, x, t, x, t, epochs=2, mini_batch_size=10, optimizer="Adam",
                      verbose=False)
    assert trainer.fused
    trainer.train()
    assert len(trainer.train_loss_list) == trainer.max_iter
    logits = net.predict(x.reshape(-1, 1, 10, 10))
    assert net.accuracy(x, t) == np.mean(logits.argmax(axis=1) == t)
    assert net.accuracy(x, t, batch_size=7) == net.accuracy(x, t)


def test_save_and_load_params_without_pickle(rng, tmp_path):
    net = SimpleConvNet(**SMALL, seed=0)
    path = tmp_path / "params.pkl"  # the book's default name; the content is .npz
    net.save_params(str(path))
    with open(path, "rb") as f:
        assert f.read(4) == b"PK\x03\x04"
    other = SimpleConvNet(**SMALL, dtype=np.float32, seed=1)
    other.load_params(str(path))
    for key in net.params:
        np.testing.assert_allclose(other.params[key], net.params[key], rtol=1e-6)
    assert other.params["W1"].dtype == np.float32
    with open(tmp_path / "book.pkl", "wb") as f:
        pickle.dump(dict(net.params), f)
    with pytest.raises(ValueError, match="pickle"):
        other.load_params(str(tmp_path / "book.pkl"))
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match="not an .npz"):
        other.load_params(str(tmp_path / "text.npz"))
    wrong = SimpleConvNet(**dict(SMALL, hidden_size=8), seed=0)
    wrong.save_params(str(tmp_path / "wrong.npz"))
    before = other.get_state()
    with pytest.raises(ValueError, match="shape"):
        other.load_params(str(tmp_path / "wrong.npz"))
    for key, v in other.get_state().items():
        np.testing.assert_array_equal(v, before[key])  # nothing written


def test_state_and_rebound_params(rng):
    net = SimpleConvNet(**SMALL, seed=0)
    state = net.get_state()
    net.params["W2"] = net.params["W2"] * 0  # rebinding, as the book's load_params does
    x, t = _batch(rng)
    net.loss(x, t)
    assert not net.params["W2"].any() and net.params["W2"].base is not None
    net.set_state(state)
    np.testing.assert_array_equal(net.params["W2"], state["W2"])
    bad = dict(state, W1=state["W1"].astype(np.float32))
    with pytest.raises(TypeError, match="W1"):
        net.set_state(bad)
    with pytest.raises(ValueError, match="missing"):
        net.set_state({k: v for k, v in state.items() if k != "b3"})


@pytest.mark.parametrize("kw,exc,match", [
    (dict(conv_param={"filter_num": 3, "filter_size": 4, "pad": 0, "stride": 1}),
     ValueError, "even"),
    (dict(conv_param={"filter_num": 3, "filter_size": 5, "pad": 0, "stride": 2}),
     ValueError, "whole number"),
    (dict(conv_param={"filter_num": 3, "filter_size": 29, "pad": 0, "stride": 1}),
     ValueError, "larger than the padded input"),
    (dict(conv_param={"filter_num": 3, "filter_size": 5, "pad": -1, "stride": 1}),
     ValueError, "pad"),
    (dict(conv_param={"filter_num": 3, "filter_size": 5}), ValueError, "missing"),
    (dict(input_dim=(28, 28)), ValueError, "input_dim"),
    (dict(weight_init_std=0), ValueError, "weight_init_std"),
    (dict(dtype=np.int32), TypeError, "dtype"),
    (dict(hidden_size=0), ValueError, "hidden_size"),
])
def test_constructor_rejects_bad_arguments(kw, exc, match):
    with pytest.raises(exc, match=match):
        SimpleConvNet(**kw)


@compiled_only
def test_train_step_rejects_bad_batches(rng):
    net = SimpleConvNet(**SMALL, seed=0)
    opt = optimizers.Adam()
    before = net.get_state()
    x, t = _batch(rng)
    with pytest.raises(ValueError, match=r"labels in t must be in \[0, 5\)"):
        net.train_step(x, np.full(6, 5), opt)
    with pytest.raises(ValueError, match="images of shape"):
        net.train_step(rng.random((6, 1, 9, 10)), t, opt)
    with pytest.raises(ValueError, match="4-D"):
        net.train_step(rng.random((6, 10, 10)), t, opt)
    with pytest.raises(ValueError, match="empty"):
        net.train_step(np.zeros((0, 1, 10, 10)), t[:0], opt)
    with pytest.raises(TypeError, match="optimizer"):
        net.train_step(x, t, "adam")
    for key, v in net.get_state().items():
        np.testing.assert_array_equal(v, before[key])
    assert opt.iter == 0


# -- examples/ch07 ---------------------------------------------------------------------------

def _example(name, *args, cwd):
    import subprocess
    import sys
    from pathlib import Path
    script = Path(__file__).resolve().parents[1] / "examples" / "ch07" / name
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True,
                          text=True, timeout=600, cwd=cwd, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@compiled_only
@needs_mnist_test
def test_ch07_examples_run(tmp_path):
    out = _example("train_convnet.py", "--dataset", "mnist-test-split", "--data-dir",
                   str(SHARED), "--epochs", "1", "--threads", "1", "--quiet", "--out",
                   str(tmp_path), cwd=tmp_path)
    acc = float(out.split("test accuracy ")[1].split()[0])
    assert acc > 0.8, out  # one epoch of 80 steps
    assert (tmp_path / "params.npz").is_file() and (tmp_path / "train_convnet.png").is_file()
    out = _example("visualize_filter.py", "--params", str(tmp_path / "params.npz"), "--out",
                   str(tmp_path), cwd=tmp_path)
    assert (tmp_path / "visualize_filter.png").is_file(), out
    out = _example("gradient_check.py", cwd=tmp_path)
    rows = {line.split()[0]: line for line in out.splitlines()}
    assert set(rows) == {"W1", "b1", "W2", "b2", "W3", "b3"}, out
    for line in rows.values():
        assert float(line.split("median ")[1].split()[0]) < 1e-8, out
        assert float(line.split("|fused - layers| ")[1]) < 1e-12, out


@compiled_only
@needs_fashion
def test_cli_trains_and_resumes_a_convnet(tmp_path, capsys):
    from fastbp.cli import main
    common = ["--data-dir", str(SHARED), "--no-progress", "--threads", "1"]
    first = ["train", "--model", "convnet", "--dataset", "fashion-mnist", "--batch-size", "20",
             "--eval-every", "10", "--seed", "3", *common]
    assert main([*first, "--iters", "10", "--out", str(tmp_path / "a")]) == 0
    assert "conv 30x5x5-pool-100-10" in capsys.readouterr().out
    assert main(["train", "--resume", str(tmp_path / "a" / "checkpoint.npz"), "--iters", "20",
                 *common]) == 0
    assert main([*first, "--iters", "20", "--out", str(tmp_path / "b")]) == 0
    a = np.load(tmp_path / "a" / "checkpoint.npz")
    b = np.load(tmp_path / "b" / "checkpoint.npz")
    for key in a.files:
        if "seconds" not in key and a[key].dtype.kind in "fiu":
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
