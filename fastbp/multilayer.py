"""The book's chapter-6 networks, ``MultiLayerNet`` and ``MultiLayerNetExtend``, with a fused
``train_step(x, t, optimizer)`` for any depth (:mod:`fastbp.kernels.mlp`).

``params`` holds the book's keys (``W1`` .. ``b{n+1}``, ``gamma{i}``/``beta{i}`` with
BatchNorm) as views into one flat buffer, and the layers hold references to those views,
so the book's in-place idioms (``params[key] -= lr * grad``, the book's optimizers) work
unchanged. A caller who rebinds ``params[key]`` to a new array of the same shape has its
values copied back into the buffer at the next call; another shape or dtype is an error.
"""
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from . import validation as check
from .gradient import numerical_gradient as _numerical_gradient
from .kernels import mlp as KM
from .kernels.optimizers import ADAM, EPS as _ADAM_EPS
from .kernels.rows import IDENTITY, LOGISTIC_CE, RELU, SIGMOID, SOFTMAX_CE, TANH
from .optimizers import AnyOptimizer
from .layers import Affine, BatchNormalization, Dropout, Relu, Sigmoid, SoftmaxWithLoss

_ACTIVATIONS = {"relu": (Relu, RELU), "sigmoid": (Sigmoid, SIGMOID)}
#: Hidden activations of a ``fused_only`` network (compiled path only).
_FUSED_ACTIVATIONS = {"relu": RELU, "sigmoid": SIGMOID, "tanh": TANH, "identity": IDENTITY}
#: Output layers: softmax-cross-entropy (the book's), or a sigmoid per output with binary
#: cross-entropy (``fused_only`` networks).
_OUTPUTS = {"softmax": SOFTMAX_CE, "logistic": LOGISTIC_CE}
_INTP = np.dtype(np.intp)
_INITS = {"relu": 2.0, "he": 2.0, "sigmoid": 1.0, "xavier": 1.0}
#: Batch sizes whose work space a network keeps (a training loop sees one or two).
_WORK_SIZES = 4
#: Momentum of the BatchNorm running statistics (the book's BatchNormalization default,
#: which its MultiLayerNetExtend uses).
BN_MOMENTUM = 0.9
#: Rows per compiled forward call of :meth:`MultiLayerNet.accuracy`.
EVAL_CHUNK = 10000


class _Workspace(NamedTuple):
    """The fused kernels' work space for one batch size (see kernels.mlp.arena_layout)."""
    arena: np.ndarray
    masks: np.ndarray
    lists: np.ndarray
    table: np.ndarray
    row_loss: np.ndarray


def _book_grad_order(key):
    """Sort key of a parameter name in the book's gradient dicts: by layer, then W, b,
    gamma, beta."""
    name = key.rstrip("0123456789")
    return int(key[len(name):]), ("W", "b", "gamma", "beta").index(name)


class MultiLayerNet:
    """Fully connected network: (Affine - activation) x n - Affine - SoftmaxWithLoss.

    The book's ``common/multi_layer_net.py`` API, plus :meth:`train_step`.

    Parameters
    ----------
    input_size, output_size : int
    hidden_size_list : list of int
        Widths of the hidden layers (at least one).
    activation : {'relu', 'sigmoid'}
    weight_init_std : {'relu', 'he', 'sigmoid', 'xavier'} or float
        'relu'/'he': He's initial values ``sqrt(2 / fan_in)``; 'sigmoid'/'xavier':
        Xavier's ``sqrt(1 / fan_in)``; a number is the standard deviation.
    weight_decay_lambda : float
        L2 weight decay: ``loss`` adds ``0.5 * lambda * sum(W**2)`` over every W, and the
        gradients ``lambda * W``.
    dtype : {np.float64, np.float32}
        Parameter dtype (float64, the book's, by default).
    seed : int or None
        Seeds a private generator for the initial weights (and Dropout's generator in the
        fused step). None draws through ``np.random`` in the book's order, so
        ``np.random.seed(s)`` gives the book's initial weights bit for bit.
    fused_only : bool
        Build only the compiled path (for :mod:`fastbp.sklearn`): `activation` may also be
        'tanh' or 'identity' (no activation) and `output` 'logistic'; the book's layer
        path (``layers``, :meth:`predict`, :meth:`loss`, :meth:`gradient`,
        :meth:`numerical_gradient`) is not built and raises NotImplementedError.
    output : {'softmax', 'logistic'}
        The output layer: softmax with cross-entropy (the book's), or, with
        ``fused_only=True``, an independent sigmoid per output with binary cross-entropy
        summed over the outputs (binary and multilabel targets, as (n, output_size) rows
        in [0, 1]).
    """

    def __init__(self, input_size: int, hidden_size_list: Sequence[int], output_size: int,
                 activation: str = "relu", weight_init_std: str | float = "relu",
                 weight_decay_lambda: float = 0, *, dtype: DTypeLike = np.float64,
                 seed: int | None = None, fused_only: bool = False,
                 output: str = "softmax") -> None:
        self._build(input_size, hidden_size_list, output_size, activation, weight_init_std,
                    weight_decay_lambda, dtype, seed, False, 0.5, False,
                    fused_only=fused_only, output=output)

    # -- construction -------------------------------------------------------------------
    def _build(self, input_size, hidden_size_list, output_size, activation, weight_init_std,
               weight_decay_lambda, dtype, seed, use_dropout, dropout_ratio, use_batchnorm,
               fused_only=False, output="softmax"):
        self.input_size = check.integer("input_size", input_size, 1)
        self.output_size = check.integer("output_size", output_size, 1)
        if isinstance(hidden_size_list, (str, bytes)) or not hasattr(hidden_size_list,
                                                                      "__iter__"):
            raise TypeError("hidden_size_list must be a list of ints, e.g. [100, 100], got "
                            f"{type(hidden_size_list).__name__}")
        hidden = [check.integer("hidden_size_list[]", h, 1) for h in hidden_size_list]
        if not hidden:
            raise ValueError("hidden_size_list must name at least one hidden layer, e.g. "
                             "[100]")
        fused_only = bool(fused_only)
        if fused_only:
            if activation not in _FUSED_ACTIVATIONS:
                raise ValueError("activation must be 'relu', 'sigmoid', 'tanh' or 'identity', "
                                 f"got {activation!r}")
        elif activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be 'relu' or 'sigmoid', got {activation!r}")
        if output not in _OUTPUTS or (output != "softmax" and not fused_only):
            raise ValueError("output must be 'softmax' (or 'logistic' with fused_only=True), "
                             f"got {output!r}")
        if isinstance(weight_init_std, str):
            if weight_init_std.lower() not in _INITS:
                raise ValueError("weight_init_std must be 'relu', 'he', 'sigmoid', 'xavier' "
                                 f"or a positive number, got {weight_init_std!r}")
        elif not check.real("weight_init_std", weight_init_std) > 0 or not np.isfinite(
                float(weight_init_std)):
            raise ValueError(f"weight_init_std must be positive and finite, got "
                             f"{weight_init_std}")
        decay = check.real("weight_decay_lambda", weight_decay_lambda)
        if not (decay >= 0 and np.isfinite(decay)):
            raise ValueError(f"weight_decay_lambda must be >= 0 and finite, got {decay}")
        dtype = check.float_dtype(dtype)
        if seed is not None:
            seed = check.integer("seed", seed, 0)
        self.hidden_size_list = hidden
        self.hidden_layer_num = len(hidden)
        self.activation = activation
        self.fused_only = fused_only
        self.output = output
        self._act = _FUSED_ACTIVATIONS[activation]
        self._out = _OUTPUTS[output]
        self.weight_init_std = weight_init_std
        self.weight_decay_lambda = weight_decay_lambda
        self.use_dropout = bool(use_dropout)
        self.dropout_ratio = dropout_ratio
        self.use_batchnorm = bool(use_batchnorm)
        self.dtype = dtype
        self.seed = seed
        self._init_params(weight_init_std, seed)
        self._build_layers()
        self._work = {}
        self._grads = np.zeros_like(self._flat)
        # Dropout's generator in the fused step: its seed, and the steps drawn so far.
        self.dropout_seed = (seed if seed is not None
                             else int(np.random.randint(0, 2**31 - 1))) if use_dropout else 0
        self.dropout_step = 0

    def _init_params(self, weight_init_std, seed):
        sizes = [self.input_size] + self.hidden_size_list + [self.output_size]
        if seed is None:
            randn = np.random.randn
        else:
            rng = np.random.default_rng(seed)
            randn = lambda *shape: rng.standard_normal(shape)  # noqa: E731
        nl = len(sizes) - 1
        bn = self.use_batchnorm
        shapes = OrderedDict()
        for idx in range(1, nl + 1):
            shapes[f"W{idx}"] = (sizes[idx - 1], sizes[idx])
            shapes[f"b{idx}"] = (sizes[idx],)
        for idx in range(1, nl if bn else 1):
            shapes[f"gamma{idx}"] = (sizes[idx],)
            shapes[f"beta{idx}"] = (sizes[idx],)
        self._offsets, total = {}, 0
        offsets = self._offsets
        for key, shape in shapes.items():
            offsets[key] = total
            total += int(np.prod(shape))
        self._flat = np.zeros(total, self.dtype)
        self.params = {}
        for key, shape in shapes.items():
            size = int(np.prod(shape))
            self.params[key] = self._flat[offsets[key]:offsets[key] + size].reshape(shape)
        self._views = dict(self.params)
        for idx in range(1, nl + 1):  # the book's draws, in the book's order, in float64
            scale = weight_init_std
            if isinstance(scale, str):
                scale = np.sqrt(_INITS[scale.lower()] / sizes[idx - 1])
            self.params[f"W{idx}"][...] = scale * randn(sizes[idx - 1], sizes[idx])
        for idx in range(1, nl if bn else 1):
            self.params[f"gamma{idx}"][...] = 1
        # running statistics of the BatchNorm layers, one buffer
        self._stats = np.zeros(2 * sum(self.hidden_size_list) if bn else 0, self.dtype)
        layout = np.full((nl, 8), -1, np.int64)
        soff = 0
        for idx in range(1, nl + 1):
            row = layout[idx - 1]
            row[KM.W_OFF], row[KM.B_OFF] = offsets[f"W{idx}"], offsets[f"b{idx}"]
            row[KM.D_IN], row[KM.D_OUT] = sizes[idx - 1], sizes[idx]
            if bn and idx < nl:
                row[KM.GAMMA_OFF], row[KM.BETA_OFF] = offsets[f"gamma{idx}"], offsets[f"beta{idx}"]
                row[KM.RM_OFF], row[KM.RV_OFF] = soff, soff + sizes[idx]
                soff += 2 * sizes[idx]
        self._layout = layout

    def _build_layers(self):
        if self.fused_only:
            self.layers = self.last_layer = None
            return
        layer_class = _ACTIVATIONS[self.activation][0]
        self.layers = OrderedDict()
        for idx in range(1, self.hidden_layer_num + 1):
            self.layers[f"Affine{idx}"] = Affine(self.params[f"W{idx}"], self.params[f"b{idx}"])
            if self.use_batchnorm:
                row = self._layout[idx - 1]
                d = row[KM.D_OUT]
                rm = self._stats[row[KM.RM_OFF]:row[KM.RM_OFF] + d]
                rv = self._stats[row[KM.RV_OFF]:row[KM.RV_OFF] + d]
                self.layers[f"BatchNorm{idx}"] = BatchNormalization(
                    self.params[f"gamma{idx}"], self.params[f"beta{idx}"], running_mean=rm,
                    running_var=rv)
            self.layers[f"Activation_function{idx}"] = layer_class()
            if self.use_dropout:
                self.layers[f"Dropout{idx}"] = Dropout(self.dropout_ratio)
        idx = self.hidden_layer_num + 1
        self.layers[f"Affine{idx}"] = Affine(self.params[f"W{idx}"], self.params[f"b{idx}"])
        self.last_layer = SoftmaxWithLoss()

    # -- the params dict and the flat buffer ----------------------------------------------
    def _sync_params(self):
        """Make ``params`` the views into the flat buffer again: an array the caller put in
        its place is copied in (same shape), anything else raises before anything changes."""
        params = self.params
        views = self._views
        if all(params.get(k) is v for k, v in views.items()) and len(params) == len(views):
            return
        extra = set(params) - set(views)
        if extra:
            raise ValueError(f"params has keys this network does not have: {sorted(extra)}")
        new = {}
        for key, view in views.items():
            if key not in params:
                raise ValueError(f"params['{key}'] is missing; do not delete parameters")
            a = params[key]
            if a is view:
                continue
            if not isinstance(a, np.ndarray) or a.dtype.kind != "f":
                raise TypeError(f"params['{key}'] must be a float numpy array, got "
                                f"{getattr(a, 'dtype', type(a).__name__)}")
            if a.shape != view.shape:
                raise ValueError(f"params['{key}'] must keep its shape {view.shape}, got "
                                 f"{a.shape}; build a new network for other sizes")
            if a.dtype != self.dtype:
                raise TypeError(f"params['{key}'] must stay {self.dtype}, got {a.dtype}; "
                                f"assign with params['{key}'][...] = new_values")
            new[key] = a
        for key, a in new.items():
            views[key][...] = a
            params[key] = views[key]

    def get_state(self) -> dict[str, np.ndarray]:
        """Everything a checkpoint needs to continue exactly: a dict of arrays (copies).

        The parameters under their ``params`` keys, the BatchNorm running statistics as
        ``running_mean{i}`` / ``running_var{i}``, and Dropout's generator position as
        ``dropout_seed`` and ``dropout_step`` (0-d int64).
        """
        self._sync_params()
        state = {k: v.copy() for k, v in self.params.items()}
        for idx in range(1, self.hidden_layer_num + 1):
            layer = self.layers.get(f"BatchNorm{idx}")
            if layer is not None:
                state[f"running_mean{idx}"] = np.array(layer.running_mean)
                state[f"running_var{idx}"] = np.array(layer.running_var)
        state["dropout_seed"] = np.array(self.dropout_seed, np.int64)
        state["dropout_step"] = np.array(self.dropout_step, np.int64)
        return state

    def set_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`get_state`'s arrays in place; every array is checked (keys,
        shapes, dtypes) before anything is written."""
        expect = self.get_state()
        missing = set(expect) - set(state)
        extra = set(state) - set(expect)
        if missing or extra:
            raise ValueError(f"state does not fit this network: missing {sorted(missing)}, "
                             f"unexpected {sorted(extra)}")
        for key, ref in expect.items():
            a = np.asarray(state[key])
            if a.shape != ref.shape:
                raise ValueError(f"state['{key}'] has shape {a.shape}, the network "
                                 f"{ref.shape}")
            if a.dtype != ref.dtype:
                raise TypeError(f"state['{key}'] is {a.dtype}, the network {ref.dtype}")
        for key in self.params:
            self.params[key][...] = state[key]
        for idx in range(1, self.hidden_layer_num + 1):
            layer = self.layers.get(f"BatchNorm{idx}")
            if layer is not None:
                layer.running_mean[...] = state[f"running_mean{idx}"]
                layer.running_var[...] = state[f"running_var{idx}"]
        self.dropout_seed = int(state["dropout_seed"])
        self.dropout_step = int(state["dropout_step"])

    # -- the book's API -------------------------------------------------------------------
    def _layer_path(self):
        if self.fused_only:
            raise NotImplementedError("this network was built with fused_only=True: only "
                                      "train_step, fused_gradient, train_epoch, accuracy and "
                                      "probabilities are available")

    def predict(self, x: ArrayLike, train_flg: bool = False) -> np.ndarray:
        self._layer_path()
        self._sync_params()
        for key, layer in self.layers.items():
            if "Dropout" in key or "BatchNorm" in key:
                x = layer.forward(x, train_flg)
            else:
                x = layer.forward(x)
        return x

    def loss(self, x: ArrayLike, t: ArrayLike, train_flg: bool = False) -> float:
        y = self.predict(x, train_flg)
        weight_decay = 0
        for idx in range(1, self.hidden_layer_num + 2):
            W = self.params[f"W{idx}"]
            weight_decay += 0.5 * self.weight_decay_lambda * np.sum(W ** 2)
        return self.last_layer.forward(y, t) + weight_decay

    def accuracy(self, x: ArrayLike, t: ArrayLike) -> float:
        """Fraction of rows classified as `t` (labels or one-hot), in inference mode.

        Runs the compiled forward pass in chunks of :data:`EVAL_CHUNK` rows (no layer
        state is touched); the result equals the book's ``argmax(predict(x))`` up to
        rounding ties.
        """
        self._sync_params()
        x = self._rows("x", x)
        t = check.targets(t, np.empty((x.shape[0], self.output_size), self.dtype))
        labels = np.ascontiguousarray(t.argmax(axis=1) if t.ndim == 2 else t, np.intp)
        n = x.shape[0]
        rows = min(n, EVAL_CHUNK)
        work = self._workspace(rows, train=False)
        hit = np.empty(rows, np.int64)
        act = self._act
        correct = 0
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            m = stop - start
            if m != rows:
                work = self._workspace(m, train=False)
            correct += int(KM.mlp_count_correct(
                x[start:stop], labels[start:stop], self._flat, self._layout, self._stats,
                work.arena, work.masks, work.lists, work.table, act,
                self.dropout_ratio if self.use_dropout else 0.0, hit[:m]))
        return correct / float(n)

    def numerical_gradient(self, x: ArrayLike, t: ArrayLike) -> dict[str, np.ndarray]:
        """The book's central differences of ``loss(x, t, train_flg=True)`` over every
        parameter (two losses per element).

        Without Dropout each loss is one call of the compiled fused step without an update
        (its gradients unused): the layer path's loss to rounding, BatchNorm's running
        statistics updated as the layers update them. With Dropout each loss goes through
        the layers, which draw their masks from ``np.random`` as the book's do.
        """
        self._layer_path()
        if self.use_dropout:
            loss_W = lambda W: self.loss(x, t, train_flg=True)  # noqa: E731  (the book's form)
        else:
            xb, tb = self._checked_batch(x, t)
            work = self._workspace(xb.shape[0])
            empty = self._flat[:0]
            loss_W = lambda W: self._fused(xb, tb, -1, empty, empty, 0.0, 0.0, 0.0, work)  # noqa: E731
        self._sync_params()
        step = self.dropout_step  # counted by _fused; this network has no Dropout to advance
        try:
            # the book's order: W, b (gamma, beta) of each layer in turn
            return {k: _numerical_gradient(loss_W, self.params[k])
                    for k in sorted(self.params, key=_book_grad_order)}
        finally:
            self.dropout_step = step

    def gradient(self, x: ArrayLike, t: ArrayLike) -> dict[str, np.ndarray]:
        """The book's backpropagation through the layers (``train_flg=True``)."""
        self._layer_path()
        self.loss(x, t, train_flg=True)
        dout = self.last_layer.backward(1)
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)
        grads = {}
        for idx in range(1, self.hidden_layer_num + 2):
            affine = self.layers[f"Affine{idx}"]
            grads[f"W{idx}"] = affine.dW + self.weight_decay_lambda * self.params[f"W{idx}"]
            grads[f"b{idx}"] = affine.db
            if self.use_batchnorm and idx != self.hidden_layer_num + 1:
                grads[f"gamma{idx}"] = self.layers[f"BatchNorm{idx}"].dgamma
                grads[f"beta{idx}"] = self.layers[f"BatchNorm{idx}"].dbeta
        return grads

    # -- fused training -------------------------------------------------------------------
    def _rows(self, name, x):
        x = check.as_array(name, x)
        if x.ndim > 2 and x.shape[0] > 0:
            x = x.reshape(x.shape[0], -1)
        x = check.float_batch(name, x.astype(self.dtype, copy=False) if x.dtype.kind in "biuf" else x)
        if x.shape[1] != self.input_size:
            raise ValueError(f"{name} must have {self.input_size} features per row, got shape "
                             f"{x.shape}")
        return x

    def _workspace(self, n, train=True):
        key = (n, train)
        work = self._work.get(key)
        if work is None:
            table = np.empty((self._layout.shape[0] + 1, 6), np.int64)
            size = KM.arena_layout(n, self._layout, self.use_dropout, table)
            r = table.shape[0] - KM.Y_ROW_FROM_END
            lists = table[table.shape[0] - KM.LIST_ROW_FROM_END, 0]
            work = _Workspace(np.empty(size, self.dtype), np.empty(table[r, 5], np.uint8),
                              np.empty(lists, np.int32), table, np.empty(n))
            if len(self._work) >= _WORK_SIZES:
                self._work.clear()
            self._work[key] = work
        return work

    def _fused(self, x, t, kind, state1, state2, lr, c1, c2, work):
        act = self._act
        if self._out == SOFTMAX_CE:
            loss = KM.mlp_step(x, t, self._flat, self._grads, self._layout, self._stats,
                               work.arena, work.masks, work.lists, work.table, work.row_loss,
                               act, BN_MOMENTUM,
                               float(self.dropout_ratio) if self.use_dropout else 0.0,
                               self.dropout_seed, self.dropout_step,
                               float(self.weight_decay_lambda), kind, state1, state2, lr, c1,
                               c2)
        else:
            loss = KM.mlp_train_step(
                x, t, self._flat, self._grads, self._layout, self._stats, work.arena,
                work.masks, work.lists, work.table, work.row_loss, act, self._out,
                BN_MOMENTUM, float(self.dropout_ratio) if self.use_dropout else 0.0,
                self.dropout_seed, self.dropout_step, float(self.weight_decay_lambda), 1.0,
                work.row_loss[:0], kind, state1, state2, lr, c1, c2)
        if loss != -1.0:
            self.dropout_step += 1
        return loss

    def _checked_batch(self, x, t):
        self._sync_params()
        x = self._rows("x", x)
        t = check.targets(t, np.empty((x.shape[0], self.output_size), self.dtype))
        return x, t

    def train_step(self, x: ArrayLike, t: ArrayLike, optimizer: AnyOptimizer) -> float:
        """One training step on a batch as one compiled call; returns the batch loss.

        Forward (BatchNorm in train mode, its running statistics updated; Dropout from
        fastbp's own generator, seeded by ``dropout_seed`` and the step count), backward,
        weight decay and ``optimizer``'s update of every parameter, fused (see
        :mod:`fastbp.kernels.mlp`). Allocates nothing once a batch size has been seen.
        ``gradient`` stays the book's layer-by-layer path.

        Parameters
        ----------
        x : array_like, (n, input_size) (or (n, ...) reshaped); cast to the net's dtype
        t : array_like, (n,) integer labels or (n, output_size) one-hot rows
        optimizer : fastbp.optimizers.SGD, Momentum, Nesterov, AdaGrad, RMSprop or Adam
            Its state (``v``, ``h``, ``m``) becomes views into one buffer laid out like the
            parameters; ``optimizer.update(params, grads)`` keeps working on it.

        Returns
        -------
        float
            The loss of the batch before the update, weight-decay term included (NaN if
            the step met NaN or inf; the trainer stops on it).
        """
        if not all(hasattr(optimizer, a) for a in ("flat_state", "peek_hyper", "advance")):
            raise TypeError("optimizer must be one of fastbp.optimizers (SGD, Momentum, "
                            "Nesterov, AdaGrad, RMSprop, Adam), got "
                            f"{type(optimizer).__name__}")
        # The common case (a C-contiguous batch of the net's dtype, integer labels) skips
        # the conversions and the label-range scan of _checked_batch: the kernel checks the
        # labels and returns -1.0, touching nothing, when one is out of range; the full
        # checks then raise the error that names it.
        fast = (type(x) is np.ndarray and type(t) is np.ndarray and x.dtype is self.dtype
                and t.dtype is _INTP and x.ndim == 2 and t.ndim == 1
                and x.flags.c_contiguous and t.flags.c_contiguous and x.shape[0] > 0
                and x.shape[1] == self.input_size and t.shape[0] == x.shape[0])
        if fast:
            self._sync_params()
        else:
            x, t = self._checked_batch(x, t)
        kind, state1, state2 = optimizer.flat_state(self.params, self._flat)
        work = self._workspace(x.shape[0])
        hyper = optimizer.peek_hyper()
        loss = self._fused(x, t, kind, state1, state2, *hyper, work)
        if loss == -1.0:
            self._checked_batch(x, t)  # raises the ValueError naming the label
        optimizer.advance()  # only now: a rejected step leaves the optimizer as it was
        return loss

    def fused_gradient(self, x: ArrayLike, t: ArrayLike) -> dict[str, np.ndarray]:
        """The gradients of :meth:`gradient` from the fused kernel (fresh arrays), without
        any update; BatchNorm's running statistics and Dropout's generator do advance, as
        in a training step."""
        x, t = self._checked_batch(x, t)
        empty = self._flat[:0]
        self._fused(x, t, -1, empty, empty, 0.0, 0.0, 0.0, self._workspace(x.shape[0]))
        out = {}
        for key, view in self._views.items():
            off = self._offsets[key]
            out[key] = self._grads[off:off + view.size].reshape(view.shape).copy()
        return out

    def train_epoch(self, x: ArrayLike, t: ArrayLike, optimizer: AnyOptimizer, batch_size: int,
                    *, order: np.ndarray | None = None, alpha: float = 0.0,
                    adam_epsilon: float | None = None,
                    sample_weight: np.ndarray | None = None) -> float:
        """One pass over the rows of `x` in batches, every batch one fused step; one
        compiled call for the whole pass. Returns the mean loss over the rows.

        Parameters
        ----------
        x : ndarray, (N, input_size), the net's dtype, C-contiguous
        t : ndarray, (N,) intp labels (softmax output) or (N, output_size) target rows of
            the net's dtype, C-contiguous
        optimizer : fastbp.optimizers.SGD, Momentum, Nesterov, AdaGrad, RMSprop or Adam
            Updated as by :meth:`train_step` once per batch (Adam's step count advances by
            the number of batches).
        batch_size : int
            Rows per batch; the last batch holds the rest.
        order : ndarray of int64 or None
            The rows of this pass, in order (a permutation to shuffle); None: every row
            in order.
        alpha : float
            scikit-learn's L2 penalty: a batch of ``rows`` rows has weight decay
            ``alpha / rows``, in place of `weight_decay_lambda`.
        adam_epsilon : float or None
            With Adam, the epsilon of ``m / (sqrt(v) + epsilon)`` in place of the book's
            1e-7 (as scikit-learn's ``epsilon``); the loss is unchanged.
        sample_weight : ndarray of float64, (N,), or None
            Row weights: a batch's loss is ``sum(w_i * loss_i) / sum(w)`` and its weight
            decay ``alpha / sum(w)`` (scikit-learn's ``sample_weight``).

        Returns
        -------
        float
            The mean over the rows of the batch losses (each with its weight-decay term),
            weighted by batch rows; NaN if the pass met NaN or inf.

        Notes
        -----
        Nothing is checked beyond what the kernel needs to stay in bounds: the caller
        (:class:`fastbp.sklearn.MLPClassifier`) validates the data once per fit.
        """
        self._sync_params()
        if not all(hasattr(optimizer, a) for a in ("flat_state", "peek_hyper", "advance")):
            raise TypeError("optimizer must be one of fastbp.optimizers, got "
                            f"{type(optimizer).__name__}")
        if self.use_dropout or self.use_batchnorm:
            raise ValueError("train_epoch supports networks without Dropout and BatchNorm")
        n = x.shape[0]
        batch_size = min(check.integer("batch_size", batch_size, 1), max(n, 1))
        if order is None:
            order = np.arange(n, dtype=np.int64)
        order = np.ascontiguousarray(order, dtype=np.int64)
        if order.size and (order.min() < 0 or order.max() >= n):
            raise ValueError(f"order must index rows of x, in [0, {n})")
        kind, state1, state2 = optimizer.flat_state(self.params, self._flat)
        work = self._workspace(batch_size)
        key = ("epoch", batch_size, t.ndim)
        buffers = self._work.get(key)
        if buffers is None:
            buffers = (np.empty((batch_size, x.shape[1]), self.dtype),
                       np.empty((batch_size,) + t.shape[1:], t.dtype),
                       np.empty_like(work.table), np.empty(batch_size))
            self._work[key] = buffers
        xb, tb, spare, wb = buffers
        if sample_weight is None:
            weights = wb[:0]
        else:
            weights = np.ascontiguousarray(sample_weight, dtype=np.float64)
            if weights.shape != (n,):
                raise ValueError(f"sample_weight must have shape ({n},), got "
                                 f"{weights.shape}")
        scale = 1.0
        if kind == ADAM:
            lr, c1, c2 = optimizer.lr, optimizer.beta1, optimizer.beta2
            step0 = optimizer.iter
            if adam_epsilon is not None:
                scale = _ADAM_EPS / float(adam_epsilon)
        else:
            lr, c1, c2 = optimizer.peek_hyper()
            step0 = 0
        total = KM.mlp_train_epoch(x, t, weights, order, batch_size, xb, tb, wb, self._flat,
                                   self._grads, self._layout, self._stats, work.arena,
                                   work.masks, work.lists, work.table, spare, work.row_loss,
                                   self._act, self._out, float(alpha), scale, kind, state1,
                                   state2, float(lr), float(c1), float(c2), step0)
        if total == -1.0:
            raise ValueError(f"labels in t must be in [0, {self.output_size})")
        batches = -(-order.size // batch_size)
        if kind == ADAM:
            optimizer.iter += batches
        else:
            for _ in range(batches):
                optimizer.advance()
        return total / max(order.size, 1)

    def probabilities(self, x: ArrayLike, out: np.ndarray | None = None) -> np.ndarray:
        """The output layer's probabilities in inference mode, compiled, in chunks of
        :data:`EVAL_CHUNK` rows: ``softmax`` of the logits, or the sigmoid of each logit
        (``output='logistic'``).

        Parameters
        ----------
        x : array_like, (n, input_size); cast to the net's dtype
        out : ndarray, (n, output_size), the net's dtype, C-contiguous, or None

        Returns
        -------
        ndarray, (n, output_size), the net's dtype
            `out` if given.
        """
        self._sync_params()
        x = self._rows("x", x)
        n = x.shape[0]
        if out is None:
            out = np.empty((n, self.output_size), self.dtype)
        rows = min(n, EVAL_CHUNK)
        drop = float(self.dropout_ratio) if self.use_dropout else 0.0
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            work = self._workspace(stop - start, train=False)
            KM.mlp_predict(x[start:stop], self._flat, self._layout, self._stats, work.arena,
                           work.masks, work.lists, work.table, self._act, self._out, drop,
                           out[start:stop])
        return out


class MultiLayerNetExtend(MultiLayerNet):
    """:class:`MultiLayerNet` with Dropout and BatchNorm: the book's
    ``common/multi_layer_net_extend.py`` API, plus :meth:`train_step`.

    Parameters
    ----------
    use_dropout : bool
        A ``Dropout{i}`` layer after each hidden activation.
    dropout_ration : float in [0, 1)
        Its ratio (the book's spelling).
    use_batchnorm : bool
        A ``BatchNorm{i}`` layer between each hidden Affine and its activation, with
        ``gamma{i}`` (ones) and ``beta{i}`` (zeros) in ``params``.

    Other parameters as :class:`MultiLayerNet`.
    """

    def __init__(self, input_size: int, hidden_size_list: Sequence[int], output_size: int,
                 activation: str = "relu", weight_init_std: str | float = "relu",
                 weight_decay_lambda: float = 0, use_dropout: bool = False,
                 dropout_ration: float = 0.5, use_batchnorm: bool = False, *,
                 dtype: DTypeLike = np.float64, seed: int | None = None) -> None:
        ratio = check.unit_interval("dropout_ration", dropout_ration)
        self._build(input_size, hidden_size_list, output_size, activation, weight_init_std,
                    weight_decay_lambda, dtype, seed, use_dropout, ratio, use_batchnorm)
