"""fastbp.trainer.Trainer against the book's ``common/trainer.py``.

The book's network on both trainers: the same mini-batches (``np.random.choice``), the same
printed lines, lists and final weights, bit for bit. fastbp's network in fastbp's Trainer
against the book's network in the book's: the same batches, and the lists and weights to
rounding. Then the recorded loss (fused by default, the book's with ``exact_loss=True``),
the NaN stop and every argument check.
"""
import contextlib
import io

import numpy as np
import pytest

from fastbp.layers import SoftmaxWithLoss
from fastbp.multilayer import MultiLayerNet, MultiLayerNetExtend
from fastbp.network import TwoLayerNet
from fastbp.optimizers import SGD, Adam, Momentum
from fastbp.trainer import OPTIMIZERS, Trainer, make_optimizer

from book import book

OPTIMIZER_RUNS = [("SGD", {"lr": 0.1}), ("momentum", {"lr": 0.05, "momentum": 0.8}),
                  ("Nesterov", {"lr": 0.05}), ("AdaGrad", {"lr": 0.05}),
                  ("rmsprop", {"lr": 0.01, "decay_rate": 0.9}), ("ADAM", {"lr": 0.01})]


def blobs(n=300, d=30, classes=10, seed=1):
    """Separable float64 data: one random prototype per class plus noise."""
    rng = np.random.default_rng(seed)
    protos = rng.random((classes, d))
    t = rng.integers(0, classes, n)
    return np.clip(protos[t] + 0.3 * rng.standard_normal((n, d)), 0, 1), t


@pytest.fixture(scope="module")
def data():
    x, t = blobs()
    return x[:200], t[:200], x[200:], t[200:]


@pytest.fixture
def record_batches(monkeypatch):
    """Every index array np.random.choice returns, in order (both trainers call it)."""
    seen = []
    choice = np.random.choice

    def recording(*args, **kwargs):
        idx = choice(*args, **kwargs)
        seen.append(idx.copy())
        return idx

    monkeypatch.setattr(np.random, "choice", recording)
    return seen


def run(trainer_class, make_net, data, seed=5, **kw):
    """Seed np.random, build the network, train; return (trainer, network, stdout)."""
    np.random.seed(seed)
    net = make_net()
    trainer = trainer_class(net, *data, **kw)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        trainer.train()
    return trainer, net, out.getvalue()


def book_extend(**kw):
    cls = book("common.multi_layer_net_extend").MultiLayerNetExtend
    return lambda: cls(30, [16, 12], 10, **kw)


# -- the book's network on both trainers -----------------------------------------------------

@pytest.mark.parametrize("optimizer, param", OPTIMIZER_RUNS)
def test_book_network_same_run_as_the_books_trainer(data, record_batches, optimizer, param):
    BookTrainer = book("common.trainer").Trainer
    make = book_extend(use_dropout=True, dropout_ration=0.2, use_batchnorm=True,
                       weight_decay_lambda=0.01)
    kw = dict(epochs=3, mini_batch_size=25, optimizer=optimizer, optimizer_param=param)
    b, bnet, bout = run(BookTrainer, make, data, **kw)
    book_batches = list(record_batches)
    record_batches.clear()
    f, fnet, fout = run(Trainer, make, data, **kw)
    assert not f.fused  # the book's network: gradient + optimizer.update
    assert len(book_batches) == f.max_iter == 24
    assert all(np.array_equal(a, c) for a, c in zip(book_batches, record_batches))
    # Every loss and accuracy is printed: the same text is the same lists, bit for bit.
    assert fout == bout
    assert fout.count("train loss:") == 24 and fout.count("=== epoch:") == 3
    assert fout.endswith("=============== Final Test Accuracy ===============\ntest acc:"
                         + str(bnet.accuracy(data[2], data[3])) + "\n")
    assert f.train_loss_list == b.train_loss_list
    assert (f.train_acc_list, f.test_acc_list) == (b.train_acc_list, b.test_acc_list)
    for key in bnet.params:
        np.testing.assert_array_equal(fnet.params[key], bnet.params[key], err_msg=key)
    for attr in ("current_iter", "current_epoch", "max_iter", "iter_per_epoch", "batch_size"):
        assert getattr(f, attr) == getattr(b, attr), attr
    assert type(f.optimizer).__name__ == type(b.optimizer).__name__


def test_book_quirks_fractional_epoch_and_sample_count(data, record_batches):
    """200 / 32 = 6.25 steps per epoch: the book's float modulo evaluates only at step 0."""
    BookTrainer = book("common.trainer").Trainer
    make = book_extend()
    kw = dict(epochs=2.5, mini_batch_size=32, evaluate_sample_num_per_epoch=40, verbose=False)
    b, bnet, _ = run(BookTrainer, make, data, **kw)
    f, fnet, out = run(Trainer, make, data, **kw)
    assert out == "" and f.max_iter == b.max_iter == 15 and f.iter_per_epoch == 6.25
    assert f.train_acc_list == b.train_acc_list and len(f.train_acc_list) == 1
    # Evaluated on the first 40 rows: accuracies are multiples of 1/40.
    assert f.train_acc_list[0] * 40 == pytest.approx(round(f.train_acc_list[0] * 40))
    assert record_batches[0].shape == (32,) and len(record_batches) == 30
    for key in bnet.params:
        np.testing.assert_array_equal(fnet.params[key], bnet.params[key])


def test_two_layer_net_trains_on_the_books_path(data):
    x, t = data[0], data[1]
    f, net, _ = run(Trainer, lambda: TwoLayerNet(30, 8, 10, dtype=np.float64, seed=0), data,
                    epochs=1, mini_batch_size=20, optimizer_param={"lr": 0.1}, verbose=False)
    assert not f.fused  # its train_step takes an lr, not an optimizer
    np.random.seed(5)
    ref = TwoLayerNet(30, 8, 10, dtype=np.float64, seed=0)
    losses = []
    for _ in range(10):
        mask = np.random.choice(200, 20)
        grads = ref.gradient(x[mask], t[mask])
        for key in ref.params:
            ref.params[key] -= 0.1 * grads[key]
        losses.append(ref.loss(x[mask], t[mask]))
    np.testing.assert_allclose(f.train_loss_list, losses, rtol=1e-12)
    for key in ref.params:
        np.testing.assert_allclose(net.params[key], ref.params[key], rtol=1e-12, atol=1e-15)


# -- fastbp's network -------------------------------------------------------------------------

def with_fastbp_softmax(make):
    """The book's network with fastbp's SoftmaxWithLoss as its last layer.

    fastbp's loss is an exact log-sum-exp where the book's is ``-log(y + 1e-7)``: they agree
    while every target probability is well above 1e-7, but in the first steps of a
    BatchNorm network evaluated on its running statistics (``loss`` after the update) a
    target's probability underflows and the book's formula caps that row at 16.1. The
    comparison is about the trainers, so both sides use the same formula.
    """
    def build():
        net = make()
        net.last_layer = SoftmaxWithLoss()
        return net
    return build


def test_fastbp_network_exact_loss_equals_the_books_trainer(data, record_batches):
    BookTrainer = book("common.trainer").Trainer
    kw = dict(epochs=3, mini_batch_size=25, optimizer="adam", optimizer_param={"lr": 0.01},
              verbose=False)
    make_book = with_fastbp_softmax(book_extend(use_batchnorm=True, weight_decay_lambda=0.01))
    b, bnet, _ = run(BookTrainer, make_book, data, **kw)
    book_batches = list(record_batches)
    record_batches.clear()
    # seed=None: the initial weights through np.random in the book's order.
    f, fnet, _ = run(Trainer, lambda: MultiLayerNetExtend(30, [16, 12], 10, use_batchnorm=True,
                                                          weight_decay_lambda=0.01),
                     data, exact_loss=True, **kw)
    assert f.fused
    assert all(np.array_equal(a, c) for a, c in zip(book_batches, record_batches, strict=True))
    np.testing.assert_allclose(f.train_loss_list, b.train_loss_list, rtol=1e-9)
    assert (f.train_acc_list, f.test_acc_list) == (b.train_acc_list, b.test_acc_list)
    for key in bnet.params:
        np.testing.assert_allclose(fnet.params[key], bnet.params[key], rtol=1e-8, atol=1e-10,
                                   err_msg=key)
    for i in (1, 2):
        for stat in ("running_mean", "running_var"):
            np.testing.assert_allclose(getattr(fnet.layers[f"BatchNorm{i}"], stat),
                                       getattr(bnet.layers[f"BatchNorm{i}"], stat), rtol=1e-9)
    assert f.optimizer.iter == b.optimizer.iter == 24


class LossBeforeUpdate:
    """The book's network, recording its loss on each batch before ``gradient`` (the
    loss the fused step returns)."""

    def __init__(self, net):
        self.net, self.params, self.before = net, net.params, []

    def gradient(self, x, t):
        self.before.append(self.net.loss(x, t))
        return self.net.gradient(x, t)

    def loss(self, x, t):
        return self.net.loss(x, t)

    def accuracy(self, x, t):
        return self.net.accuracy(x, t)


def test_fused_loss_is_the_batch_loss_before_the_update(data):
    BookTrainer = book("common.trainer").Trainer
    BookNet = book("common.multi_layer_net").MultiLayerNet
    kw = dict(epochs=2, mini_batch_size=25, optimizer="Momentum", optimizer_param={"lr": 0.05},
              verbose=False)
    b, bnet, _ = run(BookTrainer, lambda: LossBeforeUpdate(
        with_fastbp_softmax(lambda: BookNet(30, [16, 16], 10, weight_decay_lambda=0.05))()),
        data, **kw)
    f, fnet, _ = run(Trainer, lambda: MultiLayerNet(30, [16, 16], 10, weight_decay_lambda=0.05),
                     data, **kw)
    assert not f.exact_loss
    # Loss of step i = the batch's loss under the weights before update i (weight decay
    # included), not the book's loss after it.
    np.testing.assert_allclose(f.train_loss_list, bnet.before, rtol=1e-9)
    assert not np.allclose(f.train_loss_list, b.train_loss_list, rtol=1e-3)
    assert (f.train_acc_list, f.test_acc_list) == (b.train_acc_list, b.test_acc_list)
    for key in fnet.params:
        np.testing.assert_allclose(fnet.params[key], bnet.params[key], rtol=1e-8, atol=1e-10)


def test_fused_path_prints_the_books_lines(data):
    f, net, out = run(Trainer, lambda: MultiLayerNet(30, [8], 10, seed=0), data, epochs=2,
                      mini_batch_size=50, optimizer="sgd", optimizer_param={"lr": 0.1})
    lines = out.splitlines()
    assert f.fused and f.max_iter == 8 and len(lines) == 8 + 2 + 2
    assert lines[0] == "train loss:" + str(f.train_loss_list[0])
    assert lines[1] == (f"=== epoch:1, train acc:{f.train_acc_list[0]}, "
                        f"test acc:{f.test_acc_list[0]} ===")
    assert lines[-2:] == ["=============== Final Test Accuracy ===============",
                          f"test acc:{net.accuracy(data[2], data[3])}"]
    assert f.current_iter == 8 and f.current_epoch == 2


# -- NaN stops training -----------------------------------------------------------------------

def test_nan_loss_stops_the_fused_path(data):
    np.random.seed(0)
    trainer = Trainer(MultiLayerNet(30, [8], 10, seed=0), *data, epochs=5, mini_batch_size=20,
                      optimizer_param={"lr": 1e200}, verbose=False)
    # Step 1's loss (before its update) is finite; the update makes the weights overflow.
    with pytest.raises(FloatingPointError, match=r"loss is nan at step 2 \(current_iter=1"):
        trainer.train()
    assert len(trainer.train_loss_list) == 1 and np.isfinite(trainer.train_loss_list[0])
    assert trainer.current_iter == 1


def test_nan_data_stops_the_books_path(data):
    x = data[0].copy()
    x[:, 3] = np.nan
    np.random.seed(0)
    trainer = Trainer(TwoLayerNet(30, 8, 10, dtype=np.float64, seed=0), x, data[1], data[2],
                      data[3], epochs=1, verbose=False)
    with pytest.raises(FloatingPointError, match="loss is nan at step 1 .*Lower the learning rate"):
        trainer.train_step()
    assert trainer.train_loss_list == [] and trainer.current_iter == 0


# -- arguments --------------------------------------------------------------------------------

def test_make_optimizer_names_and_params():
    assert set(OPTIMIZERS) == {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"}
    opt = make_optimizer("MoMeNtUm", {"lr": 0.2, "momentum": 0.5})
    assert isinstance(opt, Momentum) and (opt.lr, opt.momentum) == (0.2, 0.5)
    assert isinstance(make_optimizer("adam"), Adam) and make_optimizer("adam").lr == 0.001
    trainer = Trainer(MultiLayerNet(30, [8], 10, seed=0), *blobs(20), *blobs(10), epochs=1)
    assert isinstance(trainer.optimizer, SGD) and trainer.optimizer.lr == 0.01  # the book's


@pytest.mark.parametrize("kw, exc, match", [
    (dict(optimizer="adamw"), ValueError,
     ("unknown optimizer 'adamw'; use one of 'SGD', 'Momentum', 'Nesterov', 'AdaGrad', "
      "'RMSprop', 'Adam'")),
    (dict(optimizer=None), TypeError, "optimizer must be a name"),
    (dict(optimizer_param={"lr": 0.1, "momentum": 0.9}), ValueError,
     "'momentum', which SGD does not take; it takes lr"),
    (dict(optimizer_param=[("lr", 0.1)]), TypeError, "optimizer_param must be a dict"),
    (dict(optimizer_param={"lr": -1}), ValueError, "lr must be a finite number > 0"),
    (dict(mini_batch_size=0), ValueError, "mini_batch_size must be >= 1"),
    (dict(mini_batch_size=2.5), TypeError, "mini_batch_size must be an int"),
    (dict(epochs=0), ValueError, "epochs must be a positive number"),
    (dict(epochs=float("nan")), ValueError, "epochs must be a positive number"),
    (dict(epochs="3"), TypeError, "epochs must be a number"),
    (dict(epochs=0.001), ValueError, "makes no step"),
    (dict(evaluate_sample_num_per_epoch=0), ValueError, "evaluate_sample_num_per_epoch must be"),
])
def test_bad_arguments(kw, exc, match):
    x, t = blobs(40)
    with pytest.raises(exc, match=match):
        Trainer(MultiLayerNet(30, [8], 10, seed=0), x, t, x, t, **kw)


def test_bad_data_and_networks():
    x, t = blobs(40)
    net = MultiLayerNet(30, [8], 10, seed=0)
    with pytest.raises(ValueError, match="x_train has 40 rows but t_train has 39"):
        Trainer(net, x, t[:-1], x, t)
    with pytest.raises(ValueError, match="x_test is empty"):
        Trainer(net, x, t, x[:0], t[:0])
    with pytest.raises(TypeError, match="x_train must be a numpy array"):
        Trainer(net, x.tolist(), t, x, t)
    with pytest.raises(TypeError, match="t_test must be a numpy array"):
        Trainer(net, x, t, x, np.array(3))

    class NoGradient:
        def __init__(self):
            self.params = {}

        def accuracy(self, x, t):
            return 0.0

    with pytest.raises(TypeError, match="network has no loss, gradient"):
        Trainer(NoGradient(), x, t, x, t)
    # A fused network needs only accuracy; with exact_loss, loss too.
    with pytest.raises(TypeError, match="network has no loss"):
        Trainer(type("Fused", (), {"train_step": lambda self, x, t, optimizer: 0.0,
                                   "accuracy": lambda self, x, t: 0.0})(), x, t, x, t,
                exact_loss=True)
