"""MultiLayerNet / MultiLayerNetExtend: the book's API and arithmetic, and the fused step."""
import numba
import numpy as np
import pytest

from fastbp import MultiLayerNet, MultiLayerNetExtend, optimizers
from fastbp.gradient import numerical_gradient
from fastbp.kernels import _compile as KC
from fastbp.kernels import dropout_mask

from book import book
from conftest import compiled_only

# Batch sizes on both sides of every threshold of the fused step: the listed first layer
# (SMALL_BATCH), the BLAS products (AFFINE_BLAS_MIN_FLOPS: rows 1-2 stay in loops for
# 30-wide layers), and the parallel row passes (PARALLEL_MIN_ROWS).
SIZES = (1, 3, KC.SMALL_BATCH, KC.SMALL_BATCH + 1, 100, KC.PARALLEL_MIN_ROWS + 3)
CONFIGS = [
    dict(),
    dict(activation="sigmoid", weight_init_std="xavier"),
    dict(weight_decay_lambda=0.1),
    dict(use_batchnorm=True),
    dict(use_batchnorm=True, activation="sigmoid", weight_decay_lambda=0.01),
]


def _data(n, d=40, C=7, sparse=True, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, d))
    if sparse:  # MNIST-like: most inputs are 0, which the listed path skips
        x[rng.random((n, d)) < 0.7] = 0
    return x, rng.integers(0, C, n)


def _pair(cfg, dtype=np.float64, hidden=(30, 20, 9), d=40, C=7, seed=3):
    """A fastbp network and the book's, with the same initial weights (np.random.seed)."""
    cfg = dict(cfg)
    extend = "use_batchnorm" in cfg or "use_dropout" in cfg
    np.random.seed(seed)
    cls = MultiLayerNetExtend if extend else MultiLayerNet
    ours = cls(d, list(hidden), C, dtype=dtype, **cfg)
    if extend:
        B = book("common.multi_layer_net_extend").MultiLayerNetExtend
    else:
        B = book("common.multi_layer_net").MultiLayerNet
    np.random.seed(seed)
    theirs = B(d, list(hidden), C, **cfg)
    return ours, theirs


@pytest.mark.parametrize("cfg", CONFIGS + [dict(weight_init_std=0.05),
                                           dict(use_dropout=True, use_batchnorm=True)])
def test_initial_weights_are_the_books_bit_for_bit(cfg):
    ours, theirs = _pair(cfg)
    assert list(ours.params) == list(theirs.params)
    for k in theirs.params:
        np.testing.assert_array_equal(ours.params[k], theirs.params[k])
    assert list(ours.layers) == list(theirs.layers)


@pytest.mark.parametrize("cfg", CONFIGS + [dict(use_dropout=True, dropout_ration=0.3)])
def test_gradient_and_loss_equal_the_books(cfg):
    ours, theirs = _pair(cfg)
    x, t = _data(11)
    # Dropout layers draw their masks from np.random, as the book's: the same seed, the
    # same masks.
    np.random.seed(7)
    g_ours = ours.gradient(x, t)
    np.random.seed(7)
    g_theirs = theirs.gradient(x, t)
    assert set(g_ours) == set(g_theirs)
    for k in g_theirs:
        np.testing.assert_allclose(g_ours[k], g_theirs[k], rtol=1e-9, atol=1e-12, err_msg=k)
    flg = {"train_flg": True} if "use_batchnorm" in cfg or "use_dropout" in cfg else {}
    np.random.seed(8)
    a = ours.loss(x, t, **flg)
    np.random.seed(8)
    b = theirs.loss(x, t, **flg)
    assert a == pytest.approx(b, abs=1e-5)  # the book adds 1e-7 to p inside its log
    assert ours.accuracy(x, t) == theirs.accuracy(x, t)


@pytest.mark.parametrize("cfg", CONFIGS + [dict(use_dropout=True, dropout_ration=0.3)])
def test_numerical_gradient_equals_the_layer_paths(cfg):
    """numerical_gradient takes each loss from the compiled forward pass (the layers' with
    Dropout, whose masks come from np.random): the central differences of the layer path's
    loss, and BatchNorm's running statistics advance as the layers advance them."""
    ours, theirs = _pair(cfg, hidden=(12, 9))
    twin, _ = _pair(cfg, hidden=(12, 9))
    x, t = _data(3)
    book_order = list(theirs.gradient(x, t))  # W, b, gamma, beta per layer
    np.random.seed(4)
    got = ours.numerical_gradient(x, t)
    assert (ours.layers["Affine1"].x is None) == (not ours.use_dropout)  # which path ran
    np.random.seed(4)
    want = {k: numerical_gradient(lambda W: twin.loss(x, t, train_flg=True), twin.params[k])
            for k in book_order}
    assert list(got) == list(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-7, atol=1e-9, err_msg=k)
    for k, v in twin.get_state().items():
        np.testing.assert_allclose(ours.get_state()[k], v, rtol=1e-9, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("dtype", (np.float64, np.float32))
def test_fused_gradient_equals_the_layer_path(n, cfg, dtype):
    ours, _ = _pair(cfg, dtype)
    x, t = _data(n)
    x = x.astype(dtype)
    fused = ours.fused_gradient(x, t)
    if ours.use_batchnorm:  # the fused step updated the running statistics; undo
        for layer in ours.layers.values():
            if hasattr(layer, "running_mean"):
                layer.running_mean[...] = 0
                layer.running_var[...] = 0
    layered = ours.gradient(x, t)
    tol = dict(rtol=1e-9, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-3, atol=2e-5)
    for k in layered:
        np.testing.assert_allclose(fused[k], layered[k], err_msg=k, **tol)


def test_one_hot_targets_give_the_label_gradient():
    ours, _ = _pair({})
    x, t = _data(30)
    by_label = ours.fused_gradient(x, t)
    by_onehot = ours.fused_gradient(x, np.eye(7)[t])
    for k in by_label:
        np.testing.assert_allclose(by_onehot[k], by_label[k], rtol=1e-12, atol=1e-15)


def test_batchnorm_running_statistics_follow_the_book():
    ours, theirs = _pair(dict(use_batchnorm=True))
    opt_ours, opt_theirs = optimizers.SGD(lr=0.1), book("common.optimizer").SGD(lr=0.1)
    for step in range(3):
        x, t = _data(50, seed=step)
        ours.train_step(x, t, opt_ours)
        opt_theirs.update(theirs.params, theirs.gradient(x, t))
    for idx in (1, 2, 3):
        np.testing.assert_allclose(ours.layers[f"BatchNorm{idx}"].running_mean,
                                   theirs.layers[f"BatchNorm{idx}"].running_mean, rtol=1e-9)
        np.testing.assert_allclose(ours.layers[f"BatchNorm{idx}"].running_var,
                                   theirs.layers[f"BatchNorm{idx}"].running_var, rtol=1e-9)
    x, t = _data(40, seed=9)
    np.testing.assert_allclose(ours.predict(x), theirs.predict(x), rtol=1e-8, atol=1e-10)
    assert ours.accuracy(x, t) == theirs.accuracy(x, t)


OPTIMIZERS = [("SGD", dict(lr=0.1)), ("Momentum", dict(lr=0.05)), ("Nesterov", dict(lr=0.05)),
              ("AdaGrad", dict(lr=0.05)), ("RMSprop", dict(lr=0.01)), ("Adam", dict(lr=0.01))]


@pytest.mark.parametrize("n", [1, 30])  # 1: the one-row fused backward and update
@pytest.mark.parametrize("name,kw", OPTIMIZERS)
@pytest.mark.parametrize("cfg", [dict(), dict(weight_decay_lambda=0.05),
                                 dict(use_batchnorm=True),
                                 dict(activation="sigmoid", weight_init_std="xavier")])
def test_train_step_follows_the_books_training(name, kw, cfg, n):
    """Five fused steps against the book: gradient, then its optimizer's update."""
    ours, theirs = _pair(cfg)
    opt_ours = getattr(optimizers, name)(**kw)
    opt_theirs = getattr(book("common.optimizer"), name)(**kw)
    for step in range(5):
        x, t = _data(n, seed=step)
        flg = {"train_flg": True} if "use_batchnorm" in cfg else {}
        bns = [v for k, v in theirs.layers.items() if k.startswith("BatchNorm")]
        saved = [(v.running_mean, v.running_var) for v in bns]
        expect = theirs.loss(x, t, **flg)
        for v, (rm, rv) in zip(bns, saved):  # the loss call moved the running statistics
            v.running_mean, v.running_var = rm, rv
        loss = ours.train_step(x, t, opt_ours)
        assert loss == pytest.approx(expect, abs=1e-5)  # the book: log(p + 1e-7)
        opt_theirs.update(theirs.params, theirs.gradient(x, t))
    # AdaGrad and RMSprop divide by sqrt(h): for a gradient near 0 (b1 under weight decay
    # reaches 1e-11) a rounding difference of 1e-17 in it moves the step by up to ~1e-6 lr
    atol = 1e-7 if name in ("AdaGrad", "RMSprop") else 1e-11
    for k in theirs.params:
        np.testing.assert_allclose(ours.params[k], theirs.params[k], rtol=1e-8, atol=atol,
                                   err_msg=k)
    # the optimizer's book-visible state is the fused step's state
    for attr in ("v", "h", "m"):
        mine, book_state = getattr(opt_ours, attr, None), getattr(opt_theirs, attr, None)
        if book_state is not None:
            for k in book_state:
                np.testing.assert_allclose(mine[k], book_state[k], rtol=1e-7, atol=1e-12)


def test_book_update_and_fused_step_share_state():
    ours, _ = _pair({})
    opt = optimizers.Adam(lr=0.01)
    x, t = _data(20)
    ours.train_step(x, t, opt)
    opt.update(ours.params, ours.gradient(x, t))  # the book's path on the same state
    ours.train_step(x, t, opt)
    assert opt.iter == 3
    twin, _ = _pair({})
    opt2 = optimizers.Adam(lr=0.01)
    for _ in range(3):
        opt2.update(twin.params, twin.gradient(x, t))
    for k in twin.params:
        np.testing.assert_allclose(ours.params[k], twin.params[k], rtol=1e-9, atol=1e-12)


# 64 rows: the loop products (each ReLU taken with its input gradient); 300: BLAS, then the
# ReLU pass; 1: the one-row weight gradients
@pytest.mark.parametrize("n", (1, 64, 300))
def test_dropout_step_uses_fastbps_generator_and_is_deterministic(n):
    cfg = dict(use_dropout=True, dropout_ration=0.4)
    x, t = _data(n)
    runs = []
    for _ in range(2):
        net = MultiLayerNetExtend(40, [30, 20], 7, seed=5, **cfg)
        opt = optimizers.Adam()
        runs.append([net.train_step(x, t, opt) for _ in range(4)])
        assert net.dropout_step == 4
    assert runs[0] == runs[1]
    # the gradient against a plain NumPy network with the masks of dropout_mask
    net = MultiLayerNetExtend(40, [30, 20], 7, seed=5, **cfg)
    fused = net.fused_gradient(x, t)
    W1, b1, W2, b2, W3, b3 = (net.params[k] for k in ("W1", "b1", "W2", "b2", "W3", "b3"))
    masks = []
    for layer in range(2):
        m = np.empty((n, (30, 20)[layer]), np.uint8)
        dropout_mask(0.4, net.dropout_seed, 0 * 3 + layer, m)
        masks.append(m)
    if n > 1:
        assert 0.45 < np.mean(masks[0]) < 0.75
    h1 = np.maximum(x @ W1 + b1, 0)
    a1 = h1 * masks[0]
    h2 = np.maximum(a1 @ W2 + b2, 0)
    a2 = h2 * masks[1]
    y = a2 @ W3 + b3
    p = np.exp(y - y.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dy = (p - np.eye(7)[t]) / n
    da2 = dy @ W3.T * masks[1] * (h2 > 0)
    da1 = da2 @ W2.T * masks[0] * (h1 > 0)
    np.testing.assert_allclose(fused["W3"], a2.T @ dy, rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(fused["W2"], a1.T @ da2, rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(fused["W1"], x.T @ da1, rtol=1e-9, atol=1e-13)


@compiled_only
@pytest.mark.parametrize("cfg", [dict(), dict(use_batchnorm=True, use_dropout=True),
                                 dict(activation="sigmoid", weight_decay_lambda=0.01)])
def test_same_bits_on_one_and_two_numba_threads(cfg):
    results = []
    for threads in (1, 2):
        numba.set_num_threads(threads)
        try:
            net = MultiLayerNetExtend(40, [30, 20], 7, seed=1, **cfg)
            opt = optimizers.Adam()
            losses = [net.train_step(*_data(n, seed=n), opt)
                      for n in (1, KC.PARALLEL_MIN_ROWS + 5, 100)]
            results.append((losses, net.get_state()))
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert results[0][0] == results[1][0]
    for k in results[0][1]:
        np.testing.assert_array_equal(results[0][1][k], results[1][1][k])


def test_float32_network_trains_in_float32():
    net = MultiLayerNet(40, [30], 7, dtype=np.float32, seed=0)
    x, t = _data(32)
    loss0 = net.train_step(x, t, optimizers.Adam(lr=0.01))
    assert all(v.dtype == np.float32 for v in net.params.values())
    opt = optimizers.Adam(lr=0.01)
    for _ in range(50):
        loss = net.train_step(x, t, opt)
    assert loss < loss0 / 3
    assert net.accuracy(x, t) > 0.9


def test_rebound_params_are_copied_in_or_refused():
    net = MultiLayerNet(40, [30], 7, seed=0)
    x, t = _data(5)
    new = np.full((40, 30), 0.01)
    net.params["W1"] = new
    net.train_step(x, t, optimizers.SGD())
    assert net.params["W1"] is not new and net.layers["Affine1"].W is net.params["W1"]
    before = {k: v.copy() for k, v in net.params.items()}
    net.params["W1"] = np.zeros((41, 30))
    with pytest.raises(ValueError, match=r"params\['W1'\] must keep its shape"):
        net.train_step(x, t, optimizers.SGD())
    net.params["W1"] = np.zeros((40, 30), np.float32)
    with pytest.raises(TypeError, match=r"params\['W1'\] must stay float64"):
        net.train_step(x, t, optimizers.SGD())
    net.params["W1"] = net.layers["Affine1"].W
    for k, v in before.items():
        np.testing.assert_array_equal(net.params[k], v)


@pytest.mark.parametrize("args,kw,exc,match", [
    ((40, [], 7), {}, ValueError, "at least one hidden layer"),
    ((40, [30, 2.5], 7), {}, TypeError, "hidden_size_list"),
    ((40, "100", 7), {}, TypeError, "hidden_size_list must be a list"),
    ((40, [30, 0], 7), {}, ValueError, "hidden_size_list"),
    ((40, [30], 7), dict(activation="tanh"), ValueError, "activation"),
    ((40, [30], 7), dict(weight_init_std="glorot"), ValueError, "weight_init_std"),
    ((40, [30], 7), dict(weight_init_std=-1.0), ValueError, "weight_init_std"),
    ((40, [30], 7), dict(weight_decay_lambda=-0.1), ValueError, "weight_decay_lambda"),
    ((40, [30], 7), dict(dtype=np.int32), TypeError, "dtype"),
    ((0, [30], 7), {}, ValueError, "input_size"),
])
def test_bad_constructor_arguments(args, kw, exc, match):
    with pytest.raises(exc, match=match):
        MultiLayerNet(*args, **kw)


@pytest.mark.parametrize("ratio", (-0.1, 1.0, 1.5))
def test_bad_dropout_ratio(ratio):
    with pytest.raises(ValueError, match="dropout_ration"):
        MultiLayerNetExtend(40, [30], 7, use_dropout=True, dropout_ration=ratio)


def test_bad_step_arguments_change_nothing():
    net = MultiLayerNet(40, [30], 7, seed=0)
    opt = optimizers.Adam()
    x, t = _data(5)
    net.train_step(x, t, opt)
    before = net.get_state()
    it = opt.iter
    for bad_x, bad_t, exc in ((x[:, :39], t, ValueError), (x, t + 7, ValueError),
                              (x, t[:4], ValueError), (x[:0], t[:0], ValueError),
                              (x.astype(complex), t, TypeError), (x, t.astype(float), TypeError)):
        with pytest.raises(exc):
            net.train_step(bad_x, bad_t, opt)
    with pytest.raises(TypeError, match="fastbp.optimizers"):
        net.train_step(x, t, book("common.optimizer").Adam())
    assert opt.iter == it
    for k, v in before.items():
        np.testing.assert_array_equal(net.get_state()[k], v)
    other = MultiLayerNet(40, [31], 7, seed=0)
    with pytest.raises(ValueError):
        other.train_step(x, t, opt)  # opt's state was built for the other network
    assert opt.iter == it


def test_nan_input_gives_nan_loss():
    net = MultiLayerNet(40, [30], 7, seed=0)
    x, t = _data(5)
    x[2, 3] = np.nan
    assert np.isnan(net.train_step(x, t, optimizers.SGD()))


def test_state_round_trip():
    a = MultiLayerNetExtend(40, [30, 20], 7, use_batchnorm=True, use_dropout=True, seed=2)
    opt = optimizers.Adam()
    for s in range(3):
        a.train_step(*_data(16, seed=s), opt)
    b = MultiLayerNetExtend(40, [30, 20], 7, use_batchnorm=True, use_dropout=True, seed=9)
    b.set_state(a.get_state())
    x, t = _data(16, seed=5)
    b_opt = optimizers.Adam()
    b_opt.load_state_dict(opt.state_dict())
    assert a.train_step(x, t, opt) == b.train_step(x, t, b_opt)
    with pytest.raises(ValueError, match="does not fit"):
        MultiLayerNet(40, [30], 7).set_state(a.get_state())
