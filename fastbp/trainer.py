"""The book's ``Trainer`` (``common/trainer.py``), with fastbp's fused training step.

:class:`Trainer` has the book's constructor, attributes, ``train_step()``, ``train()`` and
printed lines, so the chapter-6 scripts run unchanged with ``from fastbp.trainer import
Trainer``::

    import numpy as np
    from fastbp import MultiLayerNetExtend
    from fastbp.trainer import Trainer

    np.random.seed(0)
    network = MultiLayerNetExtend(784, [100] * 6, 10, use_batchnorm=True)
    trainer = Trainer(network, x_train, t_train, x_test, t_test, epochs=20,
                      mini_batch_size=100, optimizer="Adam", optimizer_param={"lr": 0.001})
    trainer.train()
    print(trainer.test_acc_list)

Mini-batches are drawn with ``np.random.choice(train_size, batch_size)`` at every step, as
in the book, so ``np.random.seed(s)`` reproduces the book's batches. A fastbp network (one
whose ``train_step`` takes an ``optimizer``: :class:`fastbp.MultiLayerNet`,
:class:`fastbp.MultiLayerNetExtend`) is trained by that compiled step; any other network
(the book's own, :class:`fastbp.TwoLayerNet`, a user's) by the book's
``network.gradient`` and ``optimizer.update``. The optimizer is always one of
:mod:`fastbp.optimizers`, which make the book's updates.

The recorded loss
-----------------
The book's ``train_step`` evaluates ``network.loss(x_batch, t_batch)`` again *after* the
update (an extra forward pass, in inference mode: no Dropout, BatchNorm with running
statistics). fastbp's fused step already returns the batch loss *before* the update, in
training mode, at no extra cost, and :class:`Trainer` records that one by default
(``train_loss_list[i]`` is the loss the gradient of step ``i`` was taken from). Pass
``exact_loss=True`` to make the book's extra call instead; the lists then equal the
book's to rounding, except for rows whose target probability is below about 1e-7, where
the book's ``-log(y + 1e-7)`` stops at 16.1 and fastbp's exact ``SoftmaxWithLoss`` does not
(seen in the first steps of a BatchNorm network, whose running statistics are still
small). The book's path (a network without a fused step) always records the book's loss.

Differences from the book, towards robustness: the constructor checks its arguments (an
unknown optimizer name is a ``ValueError`` listing the names), and a NaN or infinite loss
stops training with a ``FloatingPointError`` naming the step instead of training on.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Mapping

import numpy as np

from . import optimizers as _optimizers
from .convnet import SimpleConvNet
from .multilayer import MultiLayerNet, MultiLayerNetExtend
from .network import TwoLayerNet
from . import validation as check

__all__ = ["OPTIMIZERS", "Trainer", "make_optimizer", "AnyNetwork"]

#: Any of fastbp's networks, for type hints (``net: AnyNetwork``).
AnyNetwork = TwoLayerNet | MultiLayerNet | MultiLayerNetExtend | SimpleConvNet

#: The optimizer classes by the lower-case names the book's ``Trainer`` accepts.
OPTIMIZERS = {
    "sgd": _optimizers.SGD,
    "momentum": _optimizers.Momentum,
    "nesterov": _optimizers.Nesterov,
    "adagrad": _optimizers.AdaGrad,
    "rmsprop": _optimizers.RMSprop,
    "adam": _optimizers.Adam,
}


def make_optimizer(name: str, optimizer_param: Mapping | None = None
                   ) -> (_optimizers.SGD | _optimizers.Momentum | _optimizers.AdaGrad
                         | _optimizers.RMSprop | _optimizers.Adam):
    """A :mod:`fastbp.optimizers` instance from the book's name and keyword arguments.

    Parameters
    ----------
    name : str
        ``'SGD'``, ``'Momentum'``, ``'Nesterov'``, ``'AdaGrad'``, ``'RMSprop'`` or
        ``'Adam'``, in any case.
    optimizer_param : mapping of str to float, optional
        Constructor arguments (``lr``, ``momentum``, ``decay_rate``, ``beta1``, ``beta2``);
        the class's defaults for those left out.

    Returns
    -------
    fastbp.optimizers.SGD, Momentum, Nesterov, AdaGrad, RMSprop or Adam

    Raises
    ------
    TypeError
        If `name` is not a string or `optimizer_param` not a mapping.
    ValueError
        If the name is unknown (the message lists the names), an argument is not one the
        class takes, or a value is out of range.
    """
    if not isinstance(name, str):
        raise TypeError(f"optimizer must be a name such as 'SGD' or 'Adam', got "
                        f"{type(name).__name__}")
    cls = OPTIMIZERS.get(name.lower())
    if cls is None:
        names = ", ".join(repr(c.__name__) for c in OPTIMIZERS.values())
        raise ValueError(f"unknown optimizer {name!r}; use one of {names} (any case)")
    if optimizer_param is None:
        optimizer_param = {}
    if not isinstance(optimizer_param, Mapping):
        raise TypeError(f"optimizer_param must be a dict such as {{'lr': 0.01}}, got "
                        f"{type(optimizer_param).__name__}")
    accepted = list(inspect.signature(cls).parameters)
    unknown = sorted(map(str, set(optimizer_param) - set(accepted)))
    if unknown:
        raise ValueError(f"optimizer_param has {', '.join(map(repr, unknown))}, which "
                         f"{cls.__name__} does not take; it takes {', '.join(accepted)}")
    return cls(**optimizer_param)


def _has_fused_step(network) -> bool:
    """Whether `network` has a ``train_step(x, t, optimizer)`` (fastbp's multi-layer
    networks), as opposed to none or :class:`fastbp.TwoLayerNet`'s ``train_step(x, t,
    lr)``: decided by the parameter's name."""
    step = getattr(network, "train_step", None)
    if not callable(step):
        return False
    try:
        return "optimizer" in inspect.signature(step).parameters
    except (TypeError, ValueError):  # a builtin or extension callable without a signature
        return False


def _pair(name, x, t):
    """Check one (images, labels) pair; return its length."""
    for label, a in ((f"x_{name}", x), (f"t_{name}", t)):
        if not isinstance(a, np.ndarray) or a.ndim == 0:
            raise TypeError(f"{label} must be a numpy array with one row per sample, got "
                            f"{type(a).__name__ if not isinstance(a, np.ndarray) else 'a 0-d array'}")
    if len(x) != len(t):
        raise ValueError(f"x_{name} has {len(x)} rows but t_{name} has {len(t)}; pass one "
                         f"label (or one-hot row) per image")
    if len(x) == 0:
        raise ValueError(f"x_{name} is empty")
    return len(x)


class Trainer:
    """Train a network with mini-batches, as the book's ``common.trainer.Trainer``.

    Parameters
    ----------
    network : object
        A fastbp network with ``train_step(x, t, optimizer)`` and ``accuracy`` (trained by
        that fused step), or any network with the book's ``params``, ``gradient``,
        ``loss`` and ``accuracy`` (trained by ``gradient`` + ``optimizer.update``).
    x_train, t_train : numpy.ndarray
        Training images (any shape with one row per sample) and labels or one-hot rows.
    x_test, t_test : numpy.ndarray
        Test images and labels, evaluated once per epoch and at the end.
    epochs : int or float, optional
        Number of epochs (default 20); ``max_iter = int(epochs * iter_per_epoch)``.
    mini_batch_size : int, optional
        Rows per step (default 100), drawn with replacement by ``np.random.choice``.
    optimizer : str, optional
        ``'SGD'`` (default), ``'Momentum'``, ``'Nesterov'``, ``'AdaGrad'``, ``'RMSprop'``
        or ``'Adam'``, any case: the class of :mod:`fastbp.optimizers` of that name.
    optimizer_param : dict, optional
        Its constructor arguments; default ``{'lr': 0.01}``, as in the book.
    evaluate_sample_num_per_epoch : int, optional
        Evaluate the per-epoch accuracies on the first this many training and test rows
        (default: all of them).
    verbose : bool, optional
        Print the book's lines: the loss of every step, the accuracies of every epoch and
        the final test accuracy (default True).
    exact_loss : bool, optional, keyword-only
        For a network with a fused step: False (default) records the loss the step
        returns (the batch loss before the update, in training mode); True makes the
        book's extra ``network.loss(x_batch, t_batch)`` call after the update and records
        that. Ignored on the book's path, which always records the book's loss.

    Attributes
    ----------
    network, verbose, x_train, t_train, x_test, t_test, epochs, evaluate_sample_num_per_epoch
        As given.
    batch_size : int
        ``mini_batch_size``.
    optimizer : fastbp.optimizers.SGD, Momentum, Nesterov, AdaGrad, RMSprop or Adam
    train_size : int
    iter_per_epoch : float
        ``max(train_size / mini_batch_size, 1)``, a float as in the book: the accuracies are
        evaluated at the steps where ``current_iter % iter_per_epoch == 0``.
    max_iter : int
        Steps made by :meth:`train`.
    current_iter, current_epoch : int
        Steps made and evaluations done so far.
    train_loss_list : list of float
        The loss of every step (see `exact_loss`).
    train_acc_list, test_acc_list : list of float
        Accuracies at each evaluation.
    fused : bool
        Whether the network's fused ``train_step`` is used.

    Raises
    ------
    TypeError
        If an argument has the wrong type, or `network` has neither a fused step nor the
        book's ``gradient``/``loss``/``params``.
    ValueError
        If a size is out of range, the arrays do not pair up, or the optimizer is unknown.
    """

    def __init__(self, network: AnyNetwork, x_train: np.ndarray, t_train: np.ndarray, x_test: np.ndarray,
                 t_test: np.ndarray, epochs: int = 20, mini_batch_size: int = 100,
                 optimizer: str = "SGD", optimizer_param: Mapping | None = None,
                 evaluate_sample_num_per_epoch: int | None = None, verbose: bool = True, *,
                 exact_loss: bool = False) -> None:
        fused = _has_fused_step(network)
        needed = ["accuracy"] + (["loss"] if exact_loss or not fused else [])
        needed += [] if fused else ["params", "gradient"]
        missing = [name for name in needed if not hasattr(network, name)]
        if missing:
            raise TypeError(f"network has no {', '.join(missing)}; pass a fastbp network "
                            f"(train_step(x, t, optimizer)) or one with the book's params, "
                            f"gradient, loss and accuracy")
        train_size = _pair("train", x_train, t_train)
        _pair("test", x_test, t_test)
        if isinstance(epochs, (bool, np.bool_)) or not isinstance(epochs, (int, float,
                                                                            np.integer,
                                                                            np.floating)):
            raise TypeError(f"epochs must be a number, got {type(epochs).__name__}")
        if not (math.isfinite(epochs) and epochs > 0):
            raise ValueError(f"epochs must be a positive number, got {epochs}")
        mini_batch_size = check.integer("mini_batch_size", mini_batch_size, 1)
        if evaluate_sample_num_per_epoch is not None:
            evaluate_sample_num_per_epoch = check.integer("evaluate_sample_num_per_epoch",
                                                          evaluate_sample_num_per_epoch, 1)
        if optimizer_param is None:
            optimizer_param = {"lr": 0.01}  # the book's default
        optimizer = make_optimizer(optimizer, optimizer_param)
        iter_per_epoch = max(train_size / mini_batch_size, 1)
        max_iter = int(epochs * iter_per_epoch)
        if max_iter < 1:
            raise ValueError(f"epochs={epochs} with {iter_per_epoch:g} steps per epoch "
                             f"makes no step; pass a larger epochs")

        self.network = network
        self.verbose = bool(verbose)
        self.x_train = x_train
        self.t_train = t_train
        self.x_test = x_test
        self.t_test = t_test
        self.epochs = epochs
        self.batch_size = mini_batch_size
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch
        self.optimizer = optimizer
        self.train_size = train_size
        self.iter_per_epoch = iter_per_epoch
        self.max_iter = max_iter
        self.current_iter = 0
        self.current_epoch = 0
        self.train_loss_list = []
        self.train_acc_list = []
        self.test_acc_list = []
        self.fused = fused
        self.exact_loss = bool(exact_loss)

    def train_step(self) -> None:
        """One step: draw a mini-batch, update the network, record the loss; at the start
        of each epoch, also record (and print) the training and test accuracy.

        Raises
        ------
        FloatingPointError
            If the loss is NaN or infinite. Nothing is recorded for the step and
            ``current_iter`` stays at it; the network's parameters may already hold NaN.
        """
        batch_mask = np.random.choice(self.train_size, self.batch_size)
        x_batch = self.x_train[batch_mask]
        t_batch = self.t_train[batch_mask]

        if self.fused:
            loss = self.network.train_step(x_batch, t_batch, self.optimizer)
            self._check_finite(loss, "the fused step's")
            if self.exact_loss:
                loss = self.network.loss(x_batch, t_batch)
        else:
            grads = self.network.gradient(x_batch, t_batch)
            self.optimizer.update(self.network.params, grads)
            loss = self.network.loss(x_batch, t_batch)
        self._check_finite(loss, "the")
        self.train_loss_list.append(loss)
        if self.verbose:
            print("train loss:" + str(loss))

        if self.current_iter % self.iter_per_epoch == 0:
            self.current_epoch += 1
            x_train, t_train = self.x_train, self.t_train
            x_test, t_test = self.x_test, self.t_test
            n = self.evaluate_sample_num_per_epoch
            if n is not None:
                x_train, t_train = x_train[:n], t_train[:n]
                x_test, t_test = x_test[:n], t_test[:n]
            train_acc = self.network.accuracy(x_train, t_train)
            test_acc = self.network.accuracy(x_test, t_test)
            self.train_acc_list.append(train_acc)
            self.test_acc_list.append(test_acc)
            if self.verbose:
                print("=== epoch:" + str(self.current_epoch) + ", train acc:" + str(train_acc)
                      + ", test acc:" + str(test_acc) + " ===")
        self.current_iter += 1

    def _check_finite(self, loss, which):
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"training diverged: {which} loss is {loss} at step {self.current_iter + 1} "
                f"(current_iter={self.current_iter}, epoch {self.current_epoch}); the "
                f"network's parameters may hold NaN or inf now. Lower the learning rate "
                f"(optimizer_param={{'lr': ...}}) or check the data for NaN/inf")

    def train(self) -> None:
        """Make ``max_iter`` steps of :meth:`train_step`, then measure (and print) the test
        accuracy on the whole test set.

        Raises
        ------
        FloatingPointError
            If a step's loss is NaN or infinite (see :meth:`train_step`).
        """
        for _ in range(self.max_iter):
            self.train_step()
        test_acc = self.network.accuracy(self.x_test, self.t_test)
        if self.verbose:
            print("=============== Final Test Accuracy ===============")
            print("test acc:" + str(test_acc))
