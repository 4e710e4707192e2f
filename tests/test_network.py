"""TwoLayerNet: the book's methods, the fused train_step, determinism, buffers."""
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest

from fastbp import TwoLayerNet, gradient_check
from fastbp.kernels import network as KN

import reference as R
from conftest import DTYPES, compiled_only


def data(rng, n=5, d=20, c=4, onehot=False):
    x = rng.random((n, d))
    x[x < 0.3] = 0
    t = rng.integers(0, c, n)
    return x, (np.eye(c)[t] if onehot else t)


def test_book_attributes():
    net = TwoLayerNet(784, 50, 10)
    assert list(net.params) == ["W1", "b1", "W2", "b2"]
    assert list(net.layers) == ["Affine1", "Relu1", "Affine2"]
    assert net.params["W1"].shape == (784, 50) and net.params["b2"].shape == (10,)
    assert net.layers["Affine1"].W is net.params["W1"]
    assert net.params["W1"].dtype == np.float64


def test_book_seeding_follows_np_random():
    np.random.seed(3)
    a = TwoLayerNet(5, 4, 3).params["W1"]
    np.random.seed(3)
    b = TwoLayerNet(5, 4, 3).params["W1"]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(TwoLayerNet(5, 4, 3, seed=1).params["W1"],
                                  TwoLayerNet(5, 4, 3, seed=1).params["W1"])


@pytest.mark.parametrize("onehot", [False, True])
def test_gradient_matches_reference_and_numerical(rng, onehot):
    net = TwoLayerNet(20, 8, 4, weight_init_std=0.5, seed=0)
    x, t = data(rng, onehot=onehot)
    grads = net.gradient(x, t)
    loss, want = R.two_layer(x, t, *(net.params[k] for k in ("W1", "b1", "W2", "b2")))
    assert net.loss(x, t) == pytest.approx(loss, rel=1e-12)
    numerical = net.numerical_gradient(x, t)
    for k in want:
        np.testing.assert_allclose(grads[k], want[k], rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(grads[k], numerical[k], rtol=1e-5, atol=1e-7)
    fused = net.fused_gradient(x, t)
    for k in want:
        np.testing.assert_allclose(fused[k], want[k], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradient_check_values(rng, dtype):
    net = TwoLayerNet(20, 8, 4, weight_init_std=0.5, dtype=dtype, seed=0)
    x, t = data(rng, n=3, onehot=True)
    diffs = gradient_check(net, x, t)
    assert set(diffs) == {"W1", "b1", "W2", "b2"}
    assert all(d < 1e-6 for d in diffs.values()), diffs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 2, 7, 64, 1000])
def test_train_step_equals_book_update(rng, dtype, n):
    net = TwoLayerNet(30, 16, 10, weight_init_std=0.3, dtype=dtype, seed=1)
    x, t = data(rng, n=n, d=30, c=10)
    before = {k: v.astype(np.float64) for k, v in net.params.items()}
    loss, grads = R.two_layer(x, t, *(before[k] for k in ("W1", "b1", "W2", "b2")))
    got = net.train_step(x.astype(dtype), t, 0.1)
    assert got == pytest.approx(loss, rel=1e-5 if dtype == np.float32 else 1e-12)
    for k in before:
        np.testing.assert_allclose(net.params[k], before[k] - 0.1 * grads[k],
                                   rtol=1e-5 if dtype == np.float32 else 1e-12,
                                   atol=1e-6 if dtype == np.float32 else 1e-14)
    # the layers see the update (same arrays)
    assert net.layers["Affine2"].b is net.params["b2"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", [1, 2, 16])
@pytest.mark.parametrize("n", [1, 3, 6])
def test_small_batch_paths_equal_book_update(rng, dtype, hidden, n):
    """Batches up to SMALL_BATCH keep lists of the non-zero inputs in dW1's storage; when
    it is too small (hidden narrower than the batch) they scan x instead. Both paths give
    the book's update and the same bits as each other."""
    assert n <= KN.SMALL_BATCH
    x, t = data(rng, n=n, d=30, c=10)
    x[x < 0.6] = 0
    x = x.astype(dtype)
    results = []
    for listed in (True, False):
        net = TwoLayerNet(30, hidden, 10, weight_init_std=0.3, dtype=dtype, seed=1)
        before = {k: v.astype(np.float64) for k, v in net.params.items()}
        work = net._buffers(n, False)
        dW1 = work[4] if listed else np.empty((1, hidden), dtype)  # too small to list
        loss = KN.two_layer_step(x, t, *(net.params[k] for k in ("W1", "b1", "W2", "b2")),
                                 0.1, *work[:4], dW1, *work[5:])
        want_loss, grads = R.two_layer(x, t, *(before[k] for k in ("W1", "b1", "W2", "b2")))
        assert loss == pytest.approx(want_loss, rel=1e-5 if dtype == np.float32 else 1e-12)
        for k in before:
            np.testing.assert_allclose(net.params[k], before[k] - 0.1 * grads[k],
                                       rtol=1e-5 if dtype == np.float32 else 1e-12,
                                       atol=1e-6 if dtype == np.float32 else 1e-14)
        results.append([net.params[k].copy() for k in ("W1", "b1", "W2", "b2")] + [loss])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_train_step_reuses_buffers(rng):
    net = TwoLayerNet(30, 16, 10, seed=1)
    x, t = data(rng, n=8, d=30, c=10)
    net.train_step(x, t, 0.1)
    work = next(iter(net._work.values()))
    ids = [id(a) for a in work]
    for _ in range(3):
        net.train_step(x, t, 0.1)
    assert [id(a) for a in next(iter(net._work.values()))] == ids and len(net._work) == 1


def test_train_step_learns(rng):
    net = TwoLayerNet(30, 16, 4, weight_init_std=0.1, dtype=np.float32, seed=2)
    x = rng.random((200, 30)).astype(np.float32)
    t = (x[:, :4]).argmax(axis=1)
    first = net.train_step(x, t, 0.5)
    for _ in range(300):
        last = net.train_step(x, t, 0.5)
    assert last < 0.5 * first
    assert net.accuracy(x, t) > 0.8


@pytest.mark.parametrize("bad, exc, words", [
    (dict(lr=-1.0), ValueError, "lr must be a positive"),
    (dict(x=np.ones((3, 7))), ValueError, "x must have 30 features"),
    (dict(x=np.ones((0, 30))), ValueError, "empty batch"),
    (dict(t=np.array([0, 1, 10])), ValueError, "labels in t must be in [0, 10)"),
    (dict(t=np.ones((3, 9))), ValueError, "one-hot t"),
    (dict(x=np.array([["a"] * 30] * 3)), TypeError, "x must be float"),
])
def test_train_step_errors(bad, exc, words):
    net = TwoLayerNet(30, 16, 10, seed=1)
    args = dict(x=np.ones((3, 30)), t=np.array([0, 1, 2]), lr=0.1)
    args.update(bad)
    with pytest.raises(exc) as info:
        net.train_step(**args)
    assert words in str(info.value)


def test_train_step_rejects_replaced_params():
    net = TwoLayerNet(30, 16, 10, seed=1)
    net.params["W1"] = np.asfortranarray(net.params["W1"])
    with pytest.raises(ValueError, match="params\\['W1'\\] must stay"):
        net.train_step(np.ones((3, 30)), np.array([0, 1, 2]), 0.1)


@pytest.mark.parametrize("n", [1, 100])
def test_train_step_after_params_replaced_by_other_shapes(rng, n):
    """Consistent params of a new hidden size, assigned after steps: the fast path's kernel
    rejects the old buffers and the full path makes new ones (no out-of-bounds access)."""
    net = TwoLayerNet(30, 16, 10, seed=1)
    x, t = data(rng, n=n, d=30, c=10)
    net.train_step(x, t, 0.1)
    net.train_step(x, t, 0.1)
    wider = TwoLayerNet(30, 40, 10, weight_init_std=0.3, seed=2)
    for k in wider.params:
        net.params[k] = wider.params[k].copy()
    before = {k: v.copy() for k, v in net.params.items()}
    want_loss, grads = R.two_layer(x, t, *(before[k] for k in ("W1", "b1", "W2", "b2")))
    assert net.train_step(x, t, 0.1) == pytest.approx(want_loss, rel=1e-12)
    for k in before:
        np.testing.assert_allclose(net.params[k], before[k] - 0.1 * grads[k], rtol=1e-12,
                                   atol=1e-14)


DETERMINISM = textwrap.dedent("""
    import sys
    import numba, numpy as np, scipy.linalg  # noqa: F401  (loads SciPy's BLAS too)
    from threadpoolctl import threadpool_info, threadpool_limits
    import fastbp
    from fastbp.kernels import network as KN
    from fastbp.kernels._compile import PARALLEL_MIN_ELEMENTS

    numba_threads, blas_threads = int(sys.argv[1]), int(sys.argv[2])
    threadpool_limits(limits=blas_threads, user_api="blas")
    blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    assert len(blas) >= 1 and set(blas) == {blas_threads}, blas
    numba.set_num_threads(numba_threads)
    # Both sides of every threshold of the fused step and of the elementwise kernels.
    sizes = (1, KN.SMALL_BATCH, KN.SMALL_BATCH + 1, 100, KN.PARALLEL_MIN_ROWS - 1,
             KN.PARALLEL_MIN_ROWS, 1000)
    big = PARALLEL_MIN_ELEMENTS // 10 + 1  # softmax over 10 classes goes parallel
    out = []
    for dtype in (np.float32, np.float64):
        rng = np.random.default_rng(0)
        net = fastbp.TwoLayerNet(784, 50, 10, dtype=dtype, seed=0)
        x = rng.random((8000, 784)).astype(dtype)
        x[x < 0.5] = 0
        t = rng.integers(0, 10, 8000)
        losses = []
        for step in range(200):
            idx = rng.integers(0, 8000, sizes[step % len(sizes)])
            losses.append(net.train_step(x[idx], t[idx], 0.1))
        # The book's loop through the layers: ReLU/softmax twins below and above the
        # elementwise threshold.
        for n in (100, big):
            idx = rng.integers(0, 8000, n)
            grads = net.gradient(x[idx], t[idx])
            for k in grads:
                net.params[k] -= 0.1 * grads[k]
        out += [net.params[k].tobytes() for k in ("W1", "b1", "W2", "b2")]
        out.append(np.array(losses).tobytes())
    sys.stdout.buffer.write(b"".join(out))
""")


@compiled_only
@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 cores")
@pytest.mark.parametrize("blas_threads", [1, 2])
def test_train_step_bit_identical_1_and_2_threads(blas_threads):
    """Same seed: bit-identical weights and losses after 200 train_steps (then two book-style
    gradient steps) with Numba's pool on 1 and on 2 threads, float32 and float64.

    One fresh process per thread count. Batch sizes on both sides of SMALL_BATCH and
    PARALLEL_MIN_ROWS (serial and parallel twins of the fused step) and of
    PARALLEL_MIN_ELEMENTS (elementwise twins in the layers). The BLAS pools are pinned with
    threadpoolctl (to 1, then to 2 threads): OpenBLAS itself rounds differently on 1 and 2
    threads (measured; see the README), which is outside this guarantee.
    """
    outs = [subprocess.run([sys.executable, "-c", DETERMINISM, str(n), str(blas_threads)],
                           capture_output=True, check=True, timeout=600).stdout
            for n in (1, 2)]
    assert len(outs[0]) > 0 and outs[0] == outs[1]
    net = TwoLayerNet(784, 50, 10, dtype=np.float32, seed=0)
    assert outs[0][:net.params["W1"].nbytes] != net.params["W1"].tobytes()  # it trained


@pytest.mark.parametrize("n", [3, 20, 600])  # hand-written, BLAS serial, BLAS parallel paths
def test_relu_gradient_is_zero_at_zero_pre_activation(rng, n):
    """Pre-activations exactly 0 (W1 = 0, b1 = 0): the book's mask (x <= 0) gives dW1 = db1 = 0
    in gradient(), fused_gradient() and train_step; a ``>= 0`` convention would not."""
    net = TwoLayerNet(6, 4, 3, weight_init_std=1.0, seed=0)
    net.params["W1"][...] = 0
    x, t = data(rng, n=n, d=6, c=3)
    loss, want = R.two_layer(x, t, *(net.params[k] for k in ("W1", "b1", "W2", "b2")))
    assert np.abs(want["W2"]).sum() == 0 and np.abs(want["b2"]).sum() > 0
    for grads in (net.gradient(x, t), net.fused_gradient(x, t)):
        assert not grads["W1"].any() and not grads["b1"].any()
        for k in want:
            np.testing.assert_allclose(grads[k], want[k], rtol=1e-12, atol=1e-15)
    net.train_step(x, t, 0.5)
    assert not net.params["W1"].any() and not net.params["b1"].any()


def test_bad_constructor_args():
    with pytest.raises(ValueError, match="hidden_size must be >= 1"):
        TwoLayerNet(4, 0, 2)
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        TwoLayerNet(4, 3, 2, dtype=np.int32)


@compiled_only
@pytest.mark.parametrize("change", ["readonly", "dtype"])
def test_train_step_params_changed_in_place_after_a_step(change):
    """The fast path's identity checks pass for an array changed in place; the error is
    still the full path's ValueError naming the parameter, and nothing is updated."""
    net = TwoLayerNet(6, 4, 3, dtype=np.float32, seed=0)
    x = np.ones((2, 6), np.float32)
    t = np.array([0, 1])
    net.train_step(x, t, 0.1)
    W1 = net.params["W1"]
    if change == "readonly":
        W1.flags.writeable = False
    else:
        W1.dtype = np.int32
    before = {k: v.copy() for k, v in net.params.items()}
    with pytest.raises(ValueError, match="W1"):
        net.train_step(x, t, 0.1)
    for k, v in net.params.items():
        np.testing.assert_array_equal(v, before[k])
