"""Tests for fastbp.train and fastbp.checkpoint: reproducibility, resume, checkpoints, accuracy;
the two-layer (ch. 5) and multi-layer (ch. 6) networks."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from fastbp.checkpoint import History, load_checkpoint, save_checkpoint
from fastbp.multilayer import MultiLayerNet, MultiLayerNetExtend
from fastbp.network import TwoLayerNet
from fastbp.optimizers import SGD, Adam, Momentum
from fastbp.train import EpochRecord, accuracy, describe, plot_history, train


from conftest import SHARED, needs_mnist_test


@pytest.fixture(autouse=True)
def python_sigint_handler():
    """Python's own Ctrl-C handler, as in a terminal. A process started in the background
    by a non-interactive shell (``cmd &``, as some CI runners do) inherits SIGINT ignored,
    and then Python installs no handler: a raised SIGINT would do nothing at all."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def blobs(n=600, d=784, classes=10, seed=0, dtype=np.float32):
    """Separable synthetic data: one random prototype per class plus noise."""
    rng = np.random.default_rng(seed)
    protos = rng.random((classes, d))
    t = rng.integers(0, classes, n)
    x = np.clip(protos[t] + 0.3 * rng.standard_normal((n, d)), 0, 1).astype(dtype)
    return x, t


@pytest.fixture(scope="module")
def data():
    x, t = blobs(700)
    return (x[:500], t[:500]), (x[500:], t[500:])


def same_record(a: History, b: History) -> bool:
    """Histories equal in everything but wall-clock seconds."""
    return (a.step_loss, a.epoch_step, a.epoch_loss, a.train_acc, a.test_acc) == (
        b.step_loss, b.epoch_step, b.epoch_loss, b.train_acc, b.test_acc)


def params_equal(a, b):
    return all(np.array_equal(a.params[k], b.params[k]) for k in ("W1", "b1", "W2", "b2"))


def test_same_seed_same_weights_and_history(data):
    kw = dict(iterations=120, batch_size=50, hidden_size=20, seed=7)
    r1, r2 = train(data, **kw), train(data, **kw)
    assert params_equal(r1.net, r2.net)
    assert same_record(r1.history, r2.history)
    r3 = train(data, **{**kw, "seed": 8})
    assert not np.array_equal(r1.net.params["W1"], r3.net.params["W1"])


def test_history_layout_and_learning(data):
    seen = []
    r = train(data, epochs=5, batch_size=50, hidden_size=20, seed=1, on_epoch=seen.append)
    h = r.history
    assert h.steps == 50 and len(h.step_loss) == 50
    assert h.epoch_step == [10, 20, 30, 40, 50]
    assert len(h.train_acc) == len(h.test_acc) == len(h.epoch_loss) == len(h.epoch_seconds) == 5
    assert [rec.epoch for rec in seen] == [1.0, 2.0, 3.0, 4.0, 5.0] and isinstance(seen[0], EpochRecord)
    assert h.epoch_loss[0] == pytest.approx(np.mean(h.step_loss[:10]))
    assert h.test_acc[-1] > 0.9  # separable blobs
    assert h.step_loss[-1] < h.step_loss[0]
    assert r.seed == 1
    for key in ("compile", "total", "gather", "step", "eval", "steps", "steps_per_second"):
        assert key in r.timings
    assert r.timings["steps"] == 50


def test_partial_last_epoch_is_evaluated(data):
    h = train(data, iterations=25, batch_size=50, hidden_size=10, seed=0).history
    assert h.epoch_step == [10, 20, 25]


def test_seed_none_is_recorded_and_reproducible(data):
    r = train(data, iterations=15, batch_size=50, hidden_size=10)
    again = train(data, iterations=15, batch_size=50, hidden_size=10, seed=r.seed)
    assert params_equal(r.net, again.net)


def test_one_hot_labels_and_float64(data):
    (x, t), (xt, tt) = data
    eye = np.eye(10, dtype=np.float64)
    r = train(((x, eye[t]), (xt, eye[tt])), iterations=30, batch_size=50, hidden_size=10, dtype=np.float64, seed=3)
    assert r.net.params["W1"].dtype == np.float64
    assert 0 <= r.history.test_acc[-1] <= 1


def test_resume_equals_uninterrupted_run(data, tmp_path):
    kw = dict(batch_size=50, hidden_size=20, seed=11)
    straight = train(data, iterations=60, **kw)
    ckpt = tmp_path / "run" / "ckpt.npz"
    first = train(data, iterations=30, checkpoint=ckpt, **kw)
    assert load_checkpoint(ckpt).step == 30 and params_equal(load_checkpoint(ckpt).make_net(), first.net)
    resumed = train(data, iterations=60, resume=ckpt, **kw)
    assert params_equal(resumed.net, straight.net)
    assert same_record(resumed.history, straight.history)
    with pytest.raises(ValueError, match="already has 30 steps"):
        train(data, iterations=30, resume=ckpt, **kw)


def test_interrupt_saves_checkpoint_and_resume_finishes(data, tmp_path):
    kw = dict(batch_size=50, hidden_size=20, seed=5)
    ckpt = tmp_path / "ckpt.npz"

    def stop_at_two(rec):
        if rec.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(data, iterations=40, checkpoint=ckpt, on_epoch=stop_at_two, **kw)
    assert load_checkpoint(ckpt).step == 20
    # No iterations given: the checkpoint's target (40) is finished.
    # No iterations, batch_size or lr given: the checkpoint's are used.
    resumed = train(data, resume=ckpt)
    straight = train(data, iterations=40, **kw)
    assert resumed.history.steps == 40
    assert same_record(resumed.history, straight.history)
    assert params_equal(resumed.net, straight.net)


class InterruptAt:
    """A network that behaves like ``net`` until its ``n``-th train_step, which raises KeyboardInterrupt."""

    def __init__(self, net, n):
        self.net, self.n, self.calls = net, n, 0
        self.params = net.params

    def train_step(self, x, t, lr):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return self.net.train_step(x, t, lr)

    def predict(self, x):
        return self.net.predict(x)


def test_interrupt_mid_epoch_then_resume_is_exact(data, tmp_path):
    kw = dict(batch_size=50, hidden_size=20, seed=9)
    ckpt = tmp_path / "ckpt.npz"
    net = InterruptAt(TwoLayerNet(784, 20, 10, dtype=np.float32, seed=9), n=26)
    with pytest.raises(KeyboardInterrupt):
        train(data, iterations=40, checkpoint=ckpt, net=net, warmup=False, **kw)
    assert load_checkpoint(ckpt).step == 25  # 25 steps done, the 26th interrupted
    resumed = train(data, resume=ckpt)
    straight = train(data, iterations=40, **kw)
    assert params_equal(resumed.net, straight.net)
    # The epoch cut by the interrupt still averages all of its 10 step losses.
    assert same_record(resumed.history, straight.history)


def test_checkpoint_roundtrip_atomic_and_pickle_free(data, tmp_path):
    r = train(data, iterations=20, batch_size=50, hidden_size=10, seed=2)
    path = save_checkpoint(tmp_path / "c.npz", r.net, r.history, seed=2, dataset="blobs")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]  # no temporary left
    with np.load(path, allow_pickle=False) as z:  # readable without pickle
        assert z["meta"].dtype.kind == "U"
    c = load_checkpoint(path)
    assert c.meta["dataset"] == "blobs" and c.meta["hidden_size"] == 10 and c.meta["dtype"] == "float32"
    assert c.history == r.history
    assert params_equal(c.make_net(), r.net)


def test_bad_checkpoints(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="junk.npz"):
        load_checkpoint(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a fastbp checkpoint"):
        load_checkpoint(tmp_path / "other.npz")
    np.savez(tmp_path / "pickled.npz", meta=np.array([{"format": "x"}], dtype=object))
    with pytest.raises(ValueError, match="pickled.npz"):
        load_checkpoint(tmp_path / "pickled.npz")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.npz")
    # A checkpoint whose zip was cut short is an error, not a partial load.
    net = TwoLayerNet(4, 3, 2, seed=0)
    good = save_checkpoint(tmp_path / "good.npz", net, History(), seed=0)
    data = good.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.npz"):
        load_checkpoint(tmp_path / "cut.npz")
    assert zipfile.is_zipfile(good)


def test_accuracy_chunked_equals_whole(data):
    (x, t), _ = data
    net = train(data, iterations=20, batch_size=50, hidden_size=10, seed=0).net
    whole = accuracy(net, x, t, chunk_size=10000)
    assert accuracy(net, x, t, chunk_size=7) == whole
    assert whole == pytest.approx(np.mean(net.predict(x).argmax(axis=1) == t))


@pytest.mark.parametrize(
    "kw, exc, match",
    [
        (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
        (dict(batch_size=1.5), TypeError, "batch_size must be an int"),
        (dict(lr=-0.1), ValueError, "lr must be a positive"),
        (dict(lr="0.1"), TypeError, "lr must be a float"),
        (dict(dtype=np.int32), TypeError, "dtype must be float32 or float64"),
        (dict(iterations=10, epochs=1), ValueError, "iterations or epochs"),
        (dict(iterations=0), ValueError, "iterations must be >= 1"),
        (dict(seed=-1), ValueError, "seed must be >= 0"),
    ],
)
def test_argument_errors(data, kw, exc, match):
    with pytest.raises(exc, match=match):
        train(data, **{"iterations": 5, **kw})


def test_data_errors(data):
    (x, t), test = data
    with pytest.raises(TypeError, match="labels of shape"):
        train(((x, t.astype(np.float32)), test), iterations=5)
    with pytest.raises(ValueError, match="flatten=True"):
        train(((x.reshape(-1, 1, 28, 28), t), test), iterations=5)
    with pytest.raises(ValueError, match="labels must have shape"):
        train(((x, t[:-1]), test), iterations=5)
    with pytest.raises(ValueError, match="labels in 0..9"):
        train(((x, t), (test[0], test[1] + 10)), iterations=5)
    with pytest.raises(ValueError, match="network expects 784"):
        train(((x[:, :100], t), None), iterations=5, net=TwoLayerNet(784, 10, 10, seed=0))
    with pytest.raises(TypeError, match="data must be"):
        train((x, t), iterations=5)


def test_no_test_set(data):
    train_pair, _ = data
    h = train((train_pair, None), iterations=10, batch_size=50, hidden_size=10, seed=0).history
    assert np.isnan(h.test_acc[-1]) and 0 <= h.train_acc[-1] <= 1


def test_plot_history_writes_png(data, tmp_path):
    h = train(data, iterations=25, batch_size=50, hidden_size=10, seed=0).history
    png = plot_history(h, tmp_path / "sub" / "curves.png", title="t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_mnist_test
def test_mnist_digits_8000_2000_short_run():
    """Shorter version of the issue's check: first 8000 test images train, last 2000 test, >= 92 %."""
    from fastbp.datasets import load_split

    x, t = load_split("test", dataset="mnist", data_dir=SHARED, download=False)
    r = train(((x[:8000], t[:8000]), (x[8000:], t[8000:])), iterations=1600, batch_size=100, lr=0.1,
              hidden_size=50, seed=0)
    assert r.history.test_acc[-1] >= 0.92, r.history.test_acc


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pixel_copy_and_gather_reproduce_the_rows(dtype):
    from fastbp.kernels.gather import gather_pixels
    from fastbp.train import _pixel_copy

    rng = np.random.default_rng(3)
    u8 = rng.integers(0, 256, (50, 784), dtype=np.uint8)
    idx = rng.integers(0, 50, 17)
    for x, divisor in ((u8.astype(np.float32) / np.float32(255), 255), (u8.astype(dtype), 1)):
        x = np.ascontiguousarray(x, dtype=dtype)  # the trainer's copy in the net's dtype
        pixels, got = _pixel_copy(x)
        assert got == divisor
        np.testing.assert_array_equal(pixels, u8)
        out = np.empty((17, 784), dtype)
        gather_pixels(pixels, idx, divisor, out)
        np.testing.assert_array_equal(out, x[idx])  # bit for bit
    for bad in (0.5, np.nan, -1.0, 256.0, 1e-9):
        x = u8.astype(dtype) / dtype(255)
        x[7, 3] = bad
        assert _pixel_copy(np.ascontiguousarray(x))[0] is None


def test_pixel_gather_trains_like_np_take(data, monkeypatch):
    import fastbp.train as T

    (x, t), test = data
    x = np.round(x * 255).astype(np.float32) / np.float32(255)  # 8-bit pixels
    a = train(((x, t), test), iterations=40, batch_size=32, seed=5, warmup=False)
    monkeypatch.setattr(T, "_pixel_copy", lambda x: (None, 0))
    b = train(((x, t), test), iterations=40, batch_size=32, seed=5, warmup=False)
    for k in a.net.params:
        np.testing.assert_array_equal(a.net.params[k], b.net.params[k])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 7, 9, 600, 1300])
def test_fused_accuracy_equals_predict(n, dtype):
    import fastbp.train as T

    rng = np.random.default_rng(n)
    net = TwoLayerNet(784, 20, 10, weight_init_std=0.5, dtype=dtype, seed=1)
    x = rng.random((n, 784)).astype(dtype)
    x[x < 0.8] = 0
    t = rng.integers(0, 10, n)
    want = np.count_nonzero(np.argmax(net.predict(x), axis=1) == t) / n
    assert T._fused_count(net, x, t, 500) is not None
    assert accuracy(net, x, t, chunk_size=500) == want
    tie = np.zeros((1, 784), dtype)  # all-zero input: logits = b2; a tie goes to class 0
    net.params["b2"][:] = 1
    assert accuracy(net, tie, np.array([0])) == 1.0
    assert accuracy(net, tie, np.array([3])) == 0.0
    bad = t.copy()
    bad[-1] = -1
    assert T._fused_count(net, x, bad, 500) is None  # a label -1: net.predict's path
    pred = np.argmax(net.predict(x), axis=1)
    assert accuracy(net, x, bad) == np.count_nonzero(pred == bad) / n


def test_resume_from_a_checkpoint_without_seed(data, tmp_path):
    net = TwoLayerNet(784, 20, 10, dtype=np.float32, seed=0)
    path = tmp_path / "hand.npz"
    save_checkpoint(path, net, History())
    a = train(data, iterations=5, batch_size=16, resume=path, seed=3, warmup=False)
    b = train(data, iterations=5, batch_size=16, resume=path, seed=3, warmup=False)
    assert a.history.steps == 5
    for k in a.net.params:
        np.testing.assert_array_equal(a.net.params[k], b.net.params[k])


# -- chapter 6: MultiLayerNet(Extend) with an optimizer ------------------------------------------

CH6 = dict(batch_size=50, hidden_size=[20, 20], optimizer="adam", batchnorm=True, dropout=0.2, seed=3)


def same_state(a, b):
    sa, sb = a.get_state(), b.get_state()
    return sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)


def same_optimizer_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)


def test_default_run_is_still_the_books_two_layer_sgd_run(data):
    """No chapter-6 setting: TwoLayerNet, its fused SGD step at lr 0.1, the seeded batches."""
    from fastbp.train import BLOCK, _batch_block

    r = train(data, iterations=30, batch_size=50, hidden_size=20, seed=7, warmup=False)
    assert type(r.net) is TwoLayerNet and type(r.optimizer) is SGD and r.optimizer.lr == 0.1
    assert r.title == "784-20-10 relu, SGD lr=0.1"
    (x, t), _ = data
    ref = TwoLayerNet(784, 20, 10, dtype=np.float32, seed=7)
    losses = []
    for s in range(30):
        idx = _batch_block(7, s // BLOCK, len(x), 50)[s % BLOCK]
        losses.append(ref.train_step(x[idx], t[idx], 0.1))
    assert params_equal(r.net, ref) and r.history.step_loss == losses


def test_multilayer_run_learns_and_names_itself(data):
    r = train(data, iterations=60, **CH6)
    assert type(r.net) is MultiLayerNetExtend and type(r.optimizer) is Adam
    assert r.net.use_batchnorm and r.net.use_dropout and r.net.dropout_ratio == 0.2
    assert r.net.dtype == np.float32 and r.net.hidden_size_list == [20, 20]
    assert r.optimizer.lr == 0.001 and r.optimizer.iter == 60  # Adam's own default lr
    assert r.title == "784-20x2-10 relu + BatchNorm + dropout 0.2, Adam lr=0.001"
    assert r.history.epoch_step == [10, 20, 30, 40, 50, 60]
    assert r.history.test_acc[-1] > 0.9 and r.timings["compile"] > 0


@pytest.mark.parametrize("kw, network, lr", [
    (dict(hidden_size=[10]), MultiLayerNet, 0.01),            # a list: MultiLayerNet, SGD 0.01
    (dict(optimizer="Momentum"), MultiLayerNet, 0.01),        # hidden 50
    (dict(weight_decay=0.1, activation="sigmoid"), MultiLayerNet, 0.01),
    (dict(dropout=0.0, hidden_size=10), MultiLayerNet, 0.01),   # ratio 0: no Dropout layers
    (dict(batchnorm=True, hidden_size=10, optimizer="adagrad", lr=0.2), MultiLayerNetExtend, 0.2),
])
def test_chapter6_settings_select_a_multilayer_net(data, kw, network, lr):
    r = train(data, iterations=3, batch_size=50, seed=0, warmup=False, **kw)
    assert type(r.net) is network and r.optimizer.lr == lr
    assert r.net.weight_decay_lambda == kw.get("weight_decay", 0.0)
    assert r.net.activation == kw.get("activation", "relu") and not r.net.use_dropout


def test_init_settings(data):
    he = train(data, iterations=1, hidden_size=[40], weight_init_std="he", seed=0, warmup=False).net
    xavier = train(data, iterations=1, hidden_size=[40], weight_init_std="Xavier", seed=0, warmup=False).net
    std = train(data, iterations=1, hidden_size=[40], weight_init_std=0.5, seed=0, warmup=False).net
    # One step of SGD at 0.01 barely moves W2 from its initial N(0, scale^2) draws.
    scales = [float(np.std(n.params["W2"])) for n in (he, xavier, std)]
    assert scales == pytest.approx([np.sqrt(2 / 40), np.sqrt(1 / 40), 0.5], rel=0.15)


def test_resume_adam_batchnorm_dropout_is_exact(data, tmp_path):
    """Weights, BN running statistics, Dropout's position, Adam's m, v and iter, and the
    mini-batch sequence: the resumed run equals the uninterrupted one bit for bit."""
    straight = train(data, iterations=60, warmup=False, **CH6)
    ckpt = tmp_path / "c.npz"
    first = train(data, iterations=30, checkpoint=ckpt, warmup=False, **CH6)
    saved = load_checkpoint(ckpt)
    assert saved.step == 30 and saved.network == "MultiLayerNetExtend" and saved.meta["optimizer"] == "Adam"
    assert same_state(saved.make_net(), first.net)
    resumed = train(data, iterations=60, resume=ckpt, warmup=False)  # everything from the checkpoint
    assert same_state(resumed.net, straight.net)
    assert same_optimizer_state(resumed.optimizer, straight.optimizer) and resumed.optimizer.iter == 60
    assert same_record(resumed.history, straight.history)
    assert not same_state(first.net, straight.net)  # the comparison can fail


def test_interrupt_mid_epoch_then_resume_multilayer_is_exact(data, tmp_path):
    kw = dict(CH6, optimizer="momentum")
    ckpt = tmp_path / "c.npz"
    net = MultiLayerNetExtend(784, [20, 20], 10, use_dropout=True, dropout_ration=0.2,
                              use_batchnorm=True, dtype=np.float32, seed=3)
    calls = []

    def step(x, t, optimizer):
        calls.append(1)
        if len(calls) == 26:
            raise KeyboardInterrupt
        return MultiLayerNetExtend.train_step(net, x, t, optimizer)

    net.train_step = step
    with pytest.raises(KeyboardInterrupt):
        train(data, iterations=40, checkpoint=ckpt, net=net, warmup=False, **kw)
    assert load_checkpoint(ckpt).step == 25
    resumed = train(data, resume=ckpt, warmup=False)
    straight = train(data, iterations=40, warmup=False, **kw)
    assert type(resumed.optimizer) is Momentum
    assert same_state(resumed.net, straight.net) and same_record(resumed.history, straight.history)


@pytest.mark.parametrize("kw, match", [
    (dict(optimizer="sgd"), "optimizer='SGD' conflicts with the checkpoint's 'Adam'"),
    (dict(hidden_size=[20]), r"hidden_size=\[20\] conflicts with the checkpoint's \[20, 20\]"),
    (dict(batchnorm=False), "batchnorm=False conflicts"),
    (dict(dropout=0.5), "dropout=0.5 conflicts"),
    (dict(optimizer_param={"beta1": 0.5}), r"optimizer_param\['beta1'\]=0.5 conflicts with the checkpoint's 0.9"),
])
def test_resume_with_other_network_or_optimizer_is_an_error(data, tmp_path, kw, match):
    ckpt = tmp_path / "c.npz"
    train(data, iterations=10, checkpoint=ckpt, warmup=False, **CH6)
    with pytest.raises(ValueError, match=match):
        train(data, iterations=20, resume=ckpt, warmup=False, **kw)
    # The same settings given again are no conflict.
    same = {k: v for k, v in CH6.items() if k != "seed"}
    assert train(data, iterations=20, resume=ckpt, warmup=False, **same).history.steps == 20


def test_two_layer_checkpoint_refuses_chapter6_settings(data, tmp_path):
    ckpt = tmp_path / "c.npz"
    train(data, iterations=10, batch_size=50, hidden_size=20, seed=1, checkpoint=ckpt, warmup=False)
    assert load_checkpoint(ckpt).meta["version"] == 1  # still the old format
    with pytest.raises(ValueError, match="optimizer='Adam' conflicts with the checkpoint's 'SGD' .a TwoLayerNet"):
        train(data, iterations=20, resume=ckpt, optimizer="adam")
    with pytest.raises(ValueError, match="hidden_size=.20, 20. conflicts"):
        train(data, iterations=20, resume=ckpt, hidden_size=[20, 20])
    with pytest.raises(ValueError, match="net is not the checkpoint's network"):
        train(data, iterations=20, resume=ckpt, net=MultiLayerNet(784, [20], 10, dtype=np.float32))
    r = train(data, iterations=20, resume=ckpt, optimizer="SGD", hidden_size=20, warmup=False)
    assert type(r.net) is TwoLayerNet and r.history.steps == 20


def test_nan_loss_stops_and_keeps_the_last_checkpoint(data, tmp_path):
    ckpt = tmp_path / "c.npz"
    net = MultiLayerNet(784, [10], 10, dtype=np.float32, seed=0)
    calls = []

    def step(x, t, optimizer):
        calls.append(1)
        loss = MultiLayerNet.train_step(net, x, t, optimizer)
        return math.nan if len(calls) == 15 else loss

    net.train_step = step
    with pytest.raises(FloatingPointError, match="diverged at step 15: the mini-batch loss is nan; "
                                                 "the checkpoint of step 10 is kept"):
        train(data, iterations=40, batch_size=50, seed=0, net=net, checkpoint=ckpt, warmup=False)
    assert load_checkpoint(ckpt).step == 10
    # A real divergence: SGD at 1e200 overflows the weights in its first update.
    with pytest.raises(FloatingPointError, match="diverged at step 2: the mini-batch loss is nan; lower"):
        train(data, iterations=20, batch_size=50, hidden_size=[10], lr=1e200, seed=0, warmup=False)
    with pytest.raises(FloatingPointError, match="diverged at step 2"):  # the two-layer step too
        train(data, iterations=20, batch_size=50, hidden_size=10, lr=1e200, seed=0, warmup=False)


@pytest.mark.parametrize("kw, exc, match", [
    (dict(hidden_size=[]), ValueError, "at least one hidden layer"),
    (dict(hidden_size=[10, 0]), ValueError, r"hidden_size\[1\] must be >= 1"),
    (dict(hidden_size="10"), TypeError, "hidden_size must be an int"),
    (dict(activation="tanh"), ValueError, "activation must be 'relu' or 'sigmoid'"),
    (dict(weight_init_std="lecun"), ValueError, "weight_init_std must be 'he', 'xavier'"),
    (dict(weight_init_std=-0.1), ValueError, "weight_init_std must be 'he', 'xavier'"),
    (dict(optimizer="adamw"), ValueError, "optimizer must be one of 'sgd', 'momentum'"),
    (dict(optimizer_param={"lr": 0.1}), ValueError, "pass lr="),
    (dict(optimizer_param={"momentum": 0.9}), ValueError, "'momentum', which SGD does not take"),
    (dict(weight_decay=-1), ValueError, "weight_decay must be >= 0"),
    (dict(dropout=1.0), ValueError, r"dropout must be in \[0, 1\)"),
    (dict(batchnorm="yes"), TypeError, "batchnorm must be True or False"),
    (dict(checkpoint_meta={"seed": 1}), ValueError, "checkpoint_meta may not set seed"),
])
def test_chapter6_argument_errors(data, kw, exc, match):
    with pytest.raises(exc, match=match):
        train(data, **{"iterations": 5, "warmup": False, **kw})


def test_describe():
    assert describe(TwoLayerNet(784, 50, 10)) == "784-50-10 relu"
    net = MultiLayerNet(784, [100] * 4, 10)
    assert describe(net, Adam(lr=0.001)) == "784-100x4-10 relu, Adam lr=0.001"
    net = MultiLayerNetExtend(30, [100, 100, 50], 10, activation="sigmoid", weight_decay_lambda=0.1,
                              use_batchnorm=True)
    assert describe(net, Momentum(lr=0.01, momentum=0.5)) == (
        "30-100x2-50-10 sigmoid + BatchNorm + weight decay 0.1, Momentum lr=0.01 momentum=0.5")


def test_multilayer_accuracy_in_chunks(data):
    (x, t), _ = data
    net = train(data, iterations=20, batch_size=50, hidden_size=[10, 10], batchnorm=True, seed=0,
                warmup=False).net
    whole = net.accuracy(x, t)
    assert accuracy(net, x, t, chunk_size=7) == whole == accuracy(net, x, np.eye(10)[t])
    assert whole == np.mean(net.predict(x).argmax(axis=1) == t)


# -- exact resume (issue 15 item 1): every network kind and stateful optimizer, every stop --------

def small_data():
    """200 training rows of 64 features (20 a batch: 10 steps an epoch), 100 test rows."""
    x, t = blobs(300, d=64, seed=4)
    return (x[:200], t[:200]), (x[200:], t[200:])


SMALL = small_data()
#: One run of each network kind with each optimizer that has state, BatchNorm and Dropout.
KINDS = {
    "two-layer SGD": dict(hidden_size=12),
    "mlp momentum": dict(hidden_size=[12, 8], optimizer="momentum"),
    "mlp nesterov": dict(hidden_size=[12, 8], optimizer="nesterov", weight_decay=0.01),
    "mlp adagrad": dict(hidden_size=[12, 8], optimizer="adagrad"),
    "mlp rmsprop": dict(hidden_size=[12, 8], optimizer="rmsprop"),
    "mlp adam": dict(hidden_size=[12, 8], optimizer="adam"),
    "extend bn+dropout adam": dict(hidden_size=[12, 8], optimizer="adam", batchnorm=True, dropout=0.3),
    "extend bn+dropout momentum": dict(hidden_size=[12, 8], optimizer="momentum", batchnorm=True,
                                       dropout=0.3),
}
RUN = dict(batch_size=20, seed=13, warmup=False)


def net_state(net):
    """Every array a network changes while training (get_state, or the four params)."""
    return net.get_state() if hasattr(net, "get_state") else {k: v.copy() for k, v in net.params.items()}


def assert_same_run(a, b):
    """Two TrainResults' networks, optimizers and histories equal bit for bit (seconds aside)."""
    sa, sb = net_state(a.net), net_state(b.net)
    assert sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
    oa, ob = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert oa.keys() == ob.keys()
    for k in oa:
        np.testing.assert_array_equal(oa[k], ob[k], err_msg=k)
    ha, hb = a.history, b.history
    assert ha.epoch_step == hb.epoch_step
    assert (ha.step_loss, ha.epoch_loss, ha.train_acc, ha.test_acc) == (
        hb.step_loss, hb.epoch_loss, hb.train_acc, hb.test_acc)


@pytest.fixture
def batch_log(monkeypatch):
    """The (step, row numbers) of every mini-batch drawn, in order."""
    import fastbp.train as T

    log = []
    indices = T.BatchSource.indices

    def spy(self, s):
        rows = indices(self, s)
        log.append((s, rows.tolist()))
        return rows

    monkeypatch.setattr(T.BatchSource, "indices", spy)
    return log


@pytest.mark.parametrize("kind", KINDS)
def test_resume_off_the_epoch_boundary_is_the_uninterrupted_run(kind, tmp_path, batch_log):
    """25 steps (evaluated at 10, 20 and its own last step 25), then resumed to 60: the
    evaluations at 10, 20, 30 ... 60, epoch means, weights, optimizer state, BatchNorm
    statistics, Dropout's position and the batches are the 60-step run's."""
    kw = {**RUN, **KINDS[kind]}
    straight = train(SMALL, iterations=60, **kw)
    straight_batches = list(batch_log)
    batch_log.clear()
    ckpt = tmp_path / "c.npz"
    first = train(SMALL, iterations=25, checkpoint=ckpt, **kw)
    assert first.history.epoch_step == [10, 20, 25]
    resumed = train(SMALL, iterations=60, resume=ckpt, warmup=False)  # the rest from the checkpoint
    assert resumed.history.epoch_step == [10, 20, 30, 40, 50, 60] == straight.history.epoch_step
    assert_same_run(resumed, straight)
    assert batch_log == straight_batches
    assert resumed.timings["steps"] == 35
    with pytest.raises(AssertionError):  # the comparison can fail
        assert_same_run(first, straight)


def interrupted(kw, tmp_path, inject, iterations=60):
    """Train with `inject` active until it interrupts; return the checkpoint written."""
    ckpt = tmp_path / "c.npz"
    with inject, pytest.raises(KeyboardInterrupt):
        train(SMALL, iterations=iterations, checkpoint=ckpt, **kw)
    return load_checkpoint(ckpt)


def assert_consistent_then_exact(ckpt_path, saved, kw, iterations=60):
    """The checkpoint holds `saved.step` steps with the weights of that many steps, and
    resuming it gives the uninterrupted run."""
    s = saved.step
    assert 0 < s < iterations and s == len(saved.history.step_loss)
    reference = train(SMALL, iterations=s, **kw)
    state = net_state(saved.make_net())
    for k, v in net_state(reference.net).items():
        np.testing.assert_array_equal(state[k], v, err_msg=f"{k} after {s} steps")
    if saved.optimizer_state is not None:
        for k, v in reference.optimizer.state_dict().items():
            np.testing.assert_array_equal(saved.optimizer_state[k], v, err_msg=k)
    assert saved.history.step_loss == reference.history.step_loss
    resumed = train(SMALL, iterations=iterations, resume=ckpt_path, warmup=False)
    assert_same_run(resumed, train(SMALL, iterations=iterations, **kw))


class Injection:
    """A context manager that monkeypatches `owner.name` with `make(original)` and counts."""

    def __init__(self, owner, name, make):
        self.owner, self.name, self.make = owner, name, make

    def __enter__(self):
        self.original = getattr(self.owner, self.name)
        setattr(self.owner, self.name, self.make(self.original))
        return self

    def __exit__(self, *exc):
        setattr(self.owner, self.name, self.original)
        return False


def on_call(n, action):
    """A wrapper factory: the `n`-th call runs `action(call)`, where call() is the original call."""
    calls = []

    def make(original):
        def wrapper(*args, **kwargs):
            calls.append(1)
            if len(calls) == n:
                return action(lambda: original(*args, **kwargs))
            return original(*args, **kwargs)
        return wrapper
    return make


def raise_interrupt(call):
    raise KeyboardInterrupt


def sigint_then(call):
    """Ctrl-C arriving just before the call (as a real SIGINT, delivered by Python's handler)."""
    signal.raise_signal(signal.SIGINT)
    return call()


def call_then_sigint(call):
    """Ctrl-C arriving right after the call returned, before anything else runs."""
    result = call()
    signal.raise_signal(signal.SIGINT)
    return result


def kernel_injection(kind, action, n):
    """Wrap the compiled step of `kind`'s network (the call that updates the weights)."""
    import fastbp.kernels as K

    if kind.startswith("two-layer"):
        # The first step goes through the checked path, the rest through the fast one.
        return Injection(K, "two_layer_step" if n == 1 else "train_step_labels", on_call(n - 1 or 1, action))
    import fastbp.kernels.mlp as KM

    return Injection(KM, "mlp_step", on_call(n, action))


@pytest.mark.parametrize("kind", KINDS)
def test_ctrl_c_between_the_kernel_and_the_step_counters(kind, tmp_path):
    """SIGINT right after the kernel has updated the weights, before the network's Dropout
    step, the optimizer's iteration and the loop's step count move on (the race): the
    checkpoint holds 23 steps with the weights of 23 steps, and resuming is exact."""
    kw = {**RUN, **KINDS[kind]}
    saved = interrupted(kw, tmp_path, kernel_injection(kind, call_then_sigint, 23))
    assert saved.step == 23
    assert_consistent_then_exact(tmp_path / "c.npz", saved, kw)


def test_the_race_injection_really_lands_mid_step():
    """Outside train(), with Python's own handler, the same injection leaves the network
    updated but its counters behind: the point the test above protects is a real one."""
    (x, t), _ = SMALL
    net = MultiLayerNetExtend(64, [12], 10, use_dropout=True, use_batchnorm=True, dtype=np.float32, seed=0)
    opt = Adam()
    net.train_step(x[:20], t[:20], opt)
    before = net.get_state()
    with kernel_injection("mlp", call_then_sigint, 1), pytest.raises(KeyboardInterrupt):
        net.train_step(x[:20], t[:20], opt)
    after = net.get_state()
    assert not np.array_equal(after["W1"], before["W1"])  # the weights moved ...
    assert after["dropout_step"] == before["dropout_step"] and opt.iter == 1  # ... the counters did not


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("when", ["sigint before the kernel", "raised before the kernel"])
def test_ctrl_c_during_a_step(kind, when, tmp_path):
    kw = {**RUN, **KINDS[kind]}
    action = sigint_then if when.startswith("sigint") else raise_interrupt
    saved = interrupted(kw, tmp_path, kernel_injection(kind, action, 34))
    # A signal is held until the step is recorded; an exception raised before the update
    # leaves the step undone.
    assert saved.step == (34 if when.startswith("sigint") else 33)
    assert_consistent_then_exact(tmp_path / "c.npz", saved, kw)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("action", [raise_interrupt, sigint_then], ids=["raised", "sigint"])
def test_ctrl_c_during_an_evaluation(kind, action, tmp_path):
    """Interrupted while measuring the accuracy of step 20 (the 3rd accuracy call: train and
    test sets of step 10, then train of step 20): the checkpoint has 20 steps and no row for
    them; the resumed run makes that evaluation first, and its history is the uninterrupted one's."""
    import fastbp.train as T

    kw = {**RUN, **KINDS[kind]}
    saved = interrupted(kw, tmp_path, Injection(T, "accuracy", on_call(3, action)))
    assert saved.step == 20 and saved.history.epoch_step == [10]
    assert_consistent_then_exact(tmp_path / "c.npz", saved, kw)


def test_ctrl_c_during_the_last_evaluation_is_finished_by_resuming(tmp_path):
    import fastbp.train as T

    kw = {**RUN, **KINDS["mlp adam"]}
    saved = interrupted(kw, tmp_path, Injection(T, "accuracy", on_call(5, raise_interrupt)), iterations=25)
    assert saved.step == 25 and saved.history.epoch_step == [10, 20]
    # iterations: the checkpoint's 25; written back to the file it resumed from.
    done = train(SMALL, resume=tmp_path / "c.npz", checkpoint=tmp_path / "c.npz", warmup=False)
    assert done.timings["steps"] == 0 and done.history.epoch_step == [10, 20, 25]
    assert_same_run(done, train(SMALL, iterations=25, **kw))
    with pytest.raises(ValueError, match="already has 25 steps"):
        train(SMALL, resume=tmp_path / "c.npz", warmup=False)


def test_a_held_signal_goes_to_the_callers_handler(tmp_path):
    """A SIGINT handler of the caller's own that does not raise: called once, after the step
    it arrived in, and training goes on; the handler is restored afterwards."""
    seen = []

    def handler(signum, frame):
        seen.append(signum)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        kw = {**RUN, **KINDS["mlp adam"]}
        with kernel_injection("mlp adam", sigint_then, 7):
            r = train(SMALL, iterations=15, **kw)
        assert seen == [signal.SIGINT] and r.history.steps == 15
        assert signal.getsignal(signal.SIGINT) is handler
    finally:
        signal.signal(signal.SIGINT, previous)
    assert signal.getsignal(signal.SIGINT) is previous


def test_eval_every_is_kept_by_a_resume(tmp_path):
    kw = {**RUN, **KINDS["mlp momentum"], "eval_every": 7}
    straight = train(SMALL, iterations=30, **kw)
    assert straight.history.epoch_step == [7, 14, 21, 28, 30]
    assert straight.settings.eval_every == 7 and straight.settings.steps_per_epoch == 10
    train(SMALL, iterations=16, checkpoint=tmp_path / "c.npz", **kw)
    resumed = train(SMALL, iterations=30, resume=tmp_path / "c.npz", warmup=False)
    assert_same_run(resumed, straight)
    with pytest.raises(ValueError, match="eval_every must be >= 1"):
        train(SMALL, iterations=5, eval_every=0)


def test_plotting_is_imported_only_when_plotting(tmp_path):
    code = ("import sys, fastbp, fastbp.train, fastbp.cli; print('matplotlib' in sys.modules); "
            "from fastbp.checkpoint import History; from fastbp.plotting import plot_history; "
            "print('matplotlib' in sys.modules); "
            f"plot_history(History([1.0, 0.5], [2], [0.7], [0.5], [0.4], [0.1]), {str(tmp_path / 'p.png')!r}); "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == ["False", "False", "True"], out.stderr
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


# -- model='convnet': the chapter-7 network through the same loop and checkpoints ----------------

def image_data():
    x, t = blobs(150, d=144, seed=6)  # 12x12 one-channel images as flat rows
    return (x[:100], t[:100]), (x[100:], t[100:])


def test_convnet_trains_and_resumes_exactly(tmp_path, batch_log):
    pytest.importorskip("fastbp.convnet")
    data = image_data()
    kw = dict(model="convnet", hidden_size=8, batch_size=10, seed=2, warmup=False)
    straight = train(data, iterations=23, **kw)
    assert type(straight.net).__name__ == "SimpleConvNet" and type(straight.optimizer) is Adam
    assert straight.title == "1x12x12-conv 30x5x5-pool-8-10 relu, Adam lr=0.001"
    straight_batches = list(batch_log)
    batch_log.clear()
    ckpt = tmp_path / "c.npz"
    first = train(data, iterations=13, checkpoint=ckpt, **kw)
    assert load_checkpoint(ckpt).network == "SimpleConvNet" and first.history.epoch_step == [10, 13]
    resumed = train(data, iterations=23, resume=ckpt, warmup=False)
    assert_same_run(resumed, straight)
    assert resumed.history.epoch_step == [10, 20, 23] and batch_log == straight_batches
    with pytest.raises(ValueError, match="model='mlp' conflicts with the checkpoint's SimpleConvNet"):
        train(data, iterations=30, resume=ckpt, model="mlp")


@pytest.mark.parametrize("kw, match", [
    (dict(model="rnn"), "model must be one of 'mlp', 'convnet', got 'rnn'"),
    (dict(model="convnet", dropout=0.5), "dropout is not a setting of model='convnet'"),
    (dict(model="convnet", hidden_size=[10, 10]), "model='convnet' has one hidden layer"),
    (dict(model="convnet", weight_init_std="he"), "takes weight_init_std as a number"),
])
def test_model_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        train(image_data(), iterations=3, warmup=False, **kw)


def test_convnet_needs_square_images():
    pytest.importorskip("fastbp.convnet")
    with pytest.raises(ValueError, match="square one-channel images"):
        x, t = blobs(40, d=60)
        train(((x, t), None), iterations=3, model="convnet", warmup=False, seed=0)
