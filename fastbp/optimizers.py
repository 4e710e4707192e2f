"""The optimizers of *Deep Learning from Scratch*, chapter 6, with the book's exact API.

``SGD``, ``Momentum``, ``Nesterov``, ``AdaGrad``, ``RMSprop`` and ``Adam`` have the book's
constructors, attributes (``lr``, ``momentum``, ``decay_rate``, ``beta1``, ``beta2``,
``iter``, and the per-parameter state dicts ``v``, ``h``, ``m``) and
``update(params, grads)``: code written against ``common/optimizer.py`` runs unchanged::

    from fastbp.optimizers import Adam

    optimizer = Adam(lr=0.001)
    for i in range(iters_num):
        grads = network.gradient(x_batch, t_batch)
        optimizer.update(network.params, grads)

Each parameter array is updated in place by one compiled pass over its memory
(:mod:`fastbp.kernels.optimizers`), with the book's arithmetic in the parameters' dtype.
Differences, all towards robustness: hyperparameters are checked when set, and ``update``
checks every array (dtypes, shapes, the state's match with ``params``) before it changes
anything, so a rejected call leaves parameters, state and ``iter`` as they were.

Two further methods serve fastbp's fused training steps and checkpoints:
:meth:`~SGD.flat_state` and :meth:`~SGD.next_hyper` hand the state and the step's
constants to :func:`fastbp.kernels.optimizer_update`, and :meth:`~SGD.state_dict` /
:meth:`~SGD.load_state_dict` save and restore the state for an exact resume.
"""
import math
from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike

from .kernels import optimizers as _K
from . import validation as check

__all__ = ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam", "AnyOptimizer"]

# Size-0 stand-ins for unused state arrays: typed like the parameters, never written.
_NO_STATE = {dt: np.empty(0, dt) for dt in check.FLOATS}


def _learning_rate(owner, name, value):
    v = check.real(name, value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {v}; e.g. "
                         f"{owner}({name}=0.01)")
    return v


def _unit_interval(owner, name, value):
    return check.unit_interval(name, value, f"{owner}({name}=0.9)")


def _sections(hypers, state, attributes):
    # The numpydoc Parameters and Attributes of an optimizer class (_Optimizer).
    lines = ["Parameters", "----------", "lr : float", "    Learning rate, > 0."]
    if hypers:
        lines += [f"{', '.join(hypers)} : float", "    In [0, 1)."]
    if state or attributes:
        lines += ["", "Attributes", "----------"]
    if attributes:
        lines += attributes.replace("\n        ", "\n    ").split("\n")
    if state:
        lines += [f"{', '.join(state[0])} : dict of str to ndarray or None",
                  f"    {state[1]} per parameter, created on the first update."]
    return "\n    ".join(lines).replace("\n    \n", "\n\n")


class _Hyper:
    """A hyperparameter attribute checked on every assignment (constructor or later, as a
    learning-rate schedule does), so an update never runs with a value the kernels
    would turn into NaN."""

    def __init__(self, check):
        self.check = check

    def __set_name__(self, owner, name):
        self.name = name
        self.slot = "_" + name

    def __get__(self, obj, objtype=None):
        return self if obj is None else getattr(obj, self.slot)

    def __set__(self, obj, value):
        setattr(obj, self.slot, self.check(type(obj).__name__, self.name, value))


class _Optimizer:
    """What the six optimizers share. A subclass gives its data as class keywords (see
    :meth:`__init_subclass__`); Adam also overrides `peek_hyper`."""

    kind = None
    #: Names of the per-parameter state dicts, in kernel order (state1, state2).
    _state = ()
    #: The constructor's hyperparameters, in kernel order (lr, c1, c2).
    _hyper_names = ("lr",)

    lr = _Hyper(_learning_rate)

    def __init_subclass__(cls, kind=None, hypers=None, state=None, attributes="", **kwargs):
        """Set up an optimizer class from its data: `kind` (its kernel code), `hypers` (its
        hyperparameters after lr, each checked to lie in [0, 1)), `state` (the names of its
        per-parameter state dicts, and what they hold), and `attributes` (more numpydoc
        Attributes entries). Fills the ``{sections}`` of its docstring from these."""
        super().__init_subclass__(**kwargs)
        if kind is None:
            return
        cls.kind = kind
        for name in hypers or ():
            hyper = _Hyper(_unit_interval)
            hyper.__set_name__(cls, name)
            setattr(cls, name, hyper)
        if hypers is not None:
            cls._hyper_names = ("lr", *hypers)
        if state is not None:
            cls._state = state[0]
        if "{sections}" in (cls.__doc__ or ""):
            cls.__doc__ = cls.__doc__.format(sections=_sections(hypers or (), state,
                                                                attributes))

    def __init__(self, lr, **hypers):
        # The subclass's own hyperparameters first (each checked by its _Hyper), then lr.
        for name, value in hypers.items():
            setattr(self, name, value)
        self.lr = lr
        for name in self._state:
            setattr(self, name, None)
        # (flat, the state dicts flat_state built, its result): see flat_state.
        self._flat_cache = None

    def __repr__(self):
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._hyper_names)
        return f"{type(self).__name__}({args})"

    def next_hyper(self) -> tuple[float, float, float]:
        """The constants of one update, advancing the step count as :meth:`update` does.

        Returns
        -------
        lr : float
            The learning rate (Adam: the bias-corrected ``lr_t`` of this step).
        c1 : float
            ``momentum`` (Momentum, Nesterov), ``decay_rate`` (RMSprop), ``beta1`` (Adam),
            else 0.
        c2 : float
            ``beta2`` (Adam), else 0.

        Notes
        -----
        With :meth:`flat_state`, ``kernels.optimizer_update(kind, param, grad, state1,
        state2, lr, c1, c2, decay)`` then makes the same update as :meth:`update`. Call it
        once per step, not once per parameter: Adam counts steps with it.
        """
        hyper = self.peek_hyper()
        self.advance()
        return hyper

    def peek_hyper(self) -> tuple[float, float, float]:
        """The constants :meth:`next_hyper` would return, without advancing the step count
        (a fused step that is rejected must leave the optimizer as it was)."""
        # The hyperparameters in kernel order (lr, then c1), padded with 0.0 to three;
        # Adam overrides this with its bias-corrected lr_t.
        return (*(getattr(self, name) for name in self._hyper_names), 0.0, 0.0)[:3]

    def advance(self) -> None:
        """Count one update (Adam's bias correction needs the count): :meth:`next_hyper`
        is :meth:`peek_hyper` then this."""

    # -- update ---------------------------------------------------------------------------

    def update(self, params: Mapping[str, np.ndarray], grads: Mapping[str, ArrayLike]) -> None:
        """Update every array of `params` in place, as the book's ``update``.

        Parameters
        ----------
        params : dict of str to ndarray
            Parameters, float32 or float64, writeable and C-contiguous, each updated in
            place by one compiled pass.
        grads : dict of str to array_like
            A gradient of the same shape and dtype for every key of `params` (extra keys
            are ignored, as in the book).

        Raises
        ------
        TypeError
            If `params` or `grads` is not a dict, a parameter is not a float ndarray, or a
            gradient's dtype differs from its parameter's.
        ValueError
            If a gradient is missing, has another shape or shares memory with its
            parameter, a parameter is not writeable and C-contiguous, or the state was
            built for other keys, shapes or dtypes (another network). Nothing is changed.

        Notes
        -----
        The state (``v``, ``h``, ``m``) is allocated on the first call, as zeros in each
        parameter's dtype. Everything is checked before anything is written.
        """
        work = self._checked(params, grads)
        for name in self._state:
            if getattr(self, name) is None:
                setattr(self, name, {key: np.zeros(p.shape, p.dtype) for key, p, _ in work})
        states = [getattr(self, name) for name in self._state]
        lr, c1, c2 = self.next_hyper()
        for key, p, g in work:
            none = _NO_STATE[p.dtype]
            s1 = states[0][key].reshape(-1) if states else none
            s2 = states[1][key].reshape(-1) if len(states) > 1 else none
            _K.optimizer_update(self.kind, p.reshape(-1), g.reshape(-1), s1, s2, lr, c1, c2,
                                0.0)

    def _checked(self, params, grads):
        """``[(key, param, grad)]`` after checking every array update() will touch."""
        cls = type(self).__name__
        if not isinstance(params, Mapping):
            raise TypeError(f"params must be a dict of parameter arrays (network.params), "
                            f"got {type(params).__name__}")
        if not isinstance(grads, Mapping):
            raise TypeError(f"grads must be a dict of gradient arrays with the keys of "
                            f"params, got {type(grads).__name__}")
        states = {name: getattr(self, name) for name in self._state}
        for name, s in states.items():
            if s is not None and not isinstance(s, Mapping):
                raise TypeError(f"{cls}.{name} must be None or a dict of arrays, got "
                                f"{type(s).__name__}; set {cls}.{name} = None to start over")
        work = []
        for key, p in params.items():
            pn = f"params[{key!r}]"
            _check_param(pn, p)
            if key not in grads:
                raise ValueError(f"grads has no entry {key!r}; pass a gradient for every key "
                                 f"of params")
            gn = f"grads[{key!r}]"
            g = check.float_array(gn, grads[key], dtype=p.dtype)
            check.same_shape(gn, g, p.shape, pn)
            if np.may_share_memory(g, p):
                raise ValueError(f"{gn} shares memory with {pn}; pass a separate gradient "
                                 f"array")
            arrays = [(pn, p), (gn, g)]
            for name, s in states.items():
                if s is not None:
                    arrays.append(self._checked_state(name, s, key, p, arrays))
            work.append((key, p, g))
        return work

    def _checked_state(self, name, s, key, p, others):
        """``(label, s[key])`` after checking that it fits `p` and overlaps none of
        `others` (``(label, array)`` pairs). Called per key and step: the messages are
        only built for an error."""
        cls = type(self).__name__
        sn = f"{cls}.{name}[{key!r}]"
        a = s.get(key)
        if not (isinstance(a, np.ndarray) and a.dtype == p.dtype and a.shape == p.shape
                and a.flags.c_contiguous and a.flags.writeable):
            fix = (f"the optimizer's state was built for other parameters; use a new {cls}() "
                   f"for another network, or set {cls}.{name} = None to start over")
            if key not in s:
                raise ValueError(f"{cls}.{name} has no entry {key!r} (built for keys "
                                 f"{sorted(map(str, s))}); {fix}")
            if not isinstance(a, np.ndarray):
                raise TypeError(f"{sn} must be a numpy.ndarray, got {type(a).__name__}; {fix}")
            if a.dtype != p.dtype:
                raise ValueError(f"{sn} is {a.dtype} but params[{key!r}] is {p.dtype}; {fix}")
            if a.shape != p.shape:
                raise ValueError(f"{sn} has shape {a.shape} but params[{key!r}] has shape "
                                 f"{p.shape}; {fix}")
            raise ValueError(f"{sn} must be a writeable C-contiguous array; {fix}")
        for other_name, other in others:
            if np.may_share_memory(a, other):
                raise ValueError(f"{sn} shares memory with {other_name}; use a new {cls}() "
                                 f"or set {cls}.{name} = None to start over")
        return sn, a

    # -- the fused steps' view ------------------------------------------------------------

    def flat_state(self, params: Mapping[str, np.ndarray], flat: np.ndarray
                   ) -> tuple[int, np.ndarray, np.ndarray]:
        """The state as flat arrays parallel to `flat`, for ``kernels.optimizer_update``.

        Parameters
        ----------
        params : dict of str to ndarray
            Every array a C-contiguous view into `flat`, of `flat`'s dtype.
        flat : ndarray, 1-D, float32 or float64, C-contiguous
            The buffer holding all parameters (the fused networks keep them in one).

        Returns
        -------
        kind : int
            ``kernels.optimizers.SGD`` ... ``ADAM``: this optimizer's code.
        state1, state2 : ndarray, 1-D, `flat`'s dtype and size
            The state arrays (Momentum/Nesterov: ``v``, size-0 ``state2``; AdaGrad/RMSprop:
            ``h``; Adam: ``m`` and ``v``; SGD: both size 0). ``self.v[key]`` etc. become
            views into them at the offset of ``params[key]`` in `flat`, so a segment
            ``flat[a:b]`` is updated with ``state1[a:b]``, ``state2[a:b]``, and
            :meth:`update` keeps working on the same memory.

        Raises
        ------
        TypeError
            If `flat` or a parameter is not a float ndarray of `flat`'s dtype.
        ValueError
            If `flat` is not 1-D and C-contiguous, a parameter is not a C-contiguous view
            into `flat`, or existing state does not fit `params` (other keys, shapes,
            dtype). Nothing is changed.

        Notes
        -----
        The first call allocates the arrays (zeros) and copies in any state that
        :meth:`update` or :meth:`load_state_dict` created before. Later calls with the
        same `flat` object return the same arrays at once (an identity check, cheap enough
        for every training step), unless a state attribute was replaced (``self.v = None``
        or a new dict): the state is then rebuilt from it.
        """
        cache = self._flat_cache
        if (cache is not None and cache[0] is flat
                and all(getattr(self, n) is d for n, d in zip(self._state, cache[1]))):
            return cache[2]
        if not isinstance(flat, np.ndarray) or flat.dtype not in check.FLOATS:
            raise TypeError(f"flat must be a float32 or float64 numpy.ndarray, got "
                            f"{getattr(flat, 'dtype', type(flat).__name__)}")
        if flat.ndim != 1 or not flat.flags.c_contiguous:
            raise ValueError(f"flat must be a 1-D C-contiguous array, got shape {flat.shape}")
        if not isinstance(params, Mapping):
            raise TypeError(f"params must be a dict of parameter arrays (views into flat), "
                            f"got {type(params).__name__}")
        offsets = {key: _offset_in(f"params[{key!r}]", p, flat) for key, p in params.items()}
        cls = type(self).__name__
        old = {}
        for name in self._state:
            s = getattr(self, name)
            if s is None:
                continue
            if not isinstance(s, Mapping):
                raise TypeError(f"{cls}.{name} must be None or a dict of arrays, got "
                                f"{type(s).__name__}; set {cls}.{name} = None to start over")
            for key in s:
                if key not in params:
                    raise ValueError(f"{cls}.{name} has an entry {key!r} that params lacks "
                                     f"(state built for another network); use a new "
                                     f"{cls}() or set {cls}.{name} = None to start over")
            for key, p in params.items():
                self._checked_state(name, s, key, p, ())
            old[name] = s
        made = []
        for name in self._state:
            full = np.zeros(flat.size, flat.dtype)
            views = {}
            for key, p in params.items():
                views[key] = full[offsets[key]:offsets[key] + p.size].reshape(p.shape)
                if name in old:
                    views[key][...] = old[name][key]
            setattr(self, name, views)
            made.append(full)
        none = _NO_STATE[flat.dtype]
        made += [none] * (2 - len(made))
        result = (self.kind, made[0], made[1])
        self._flat_cache = (flat, tuple(getattr(self, n) for n in self._state), result)
        return result

    # -- checkpoints ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        """A copy of the optimizer's state, for checkpoints.

        Returns
        -------
        dict of str to ndarray
            ``"<state>/<key>"`` (e.g. ``"m/W1"``) for every state array, copied, and, for
            Adam, ``"iter"`` as a 0-d int64 array. Empty before the first update. Ready
            for ``np.savez(path, **opt.state_dict())``.
        """
        out = {}
        for name in self._state:
            s = getattr(self, name)
            if s is not None:
                out.update((f"{name}/{key}", np.array(a, copy=True)) for key, a in s.items())
        return out

    def load_state_dict(self, state: Mapping[str, ArrayLike]) -> None:
        """Restore a :meth:`state_dict` (e.g. from ``np.load``), in place.

        Parameters
        ----------
        state : mapping of str to array_like
            As returned by :meth:`state_dict` of an optimizer of the same class.

        Raises
        ------
        TypeError
            If `state` is not a mapping or an entry is not a float array (``iter``: not an
            integer).
        ValueError
            If an entry is unknown or missing, or, when this optimizer already has state,
            the keys, shapes or dtypes differ from it. Nothing is changed.

        Notes
        -----
        Existing state arrays are overwritten in place, so views handed out by
        :meth:`flat_state` stay valid; an optimizer without state gets copies. A state
        dict from before the first update clears the state.
        """
        cls = type(self).__name__
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a dict like {cls}().state_dict() returns, got "
                            f"{type(state).__name__}")
        parsed = {name: {} for name in self._state}
        extra = self._load_extra(state)
        for k in state:
            if k in extra:
                continue
            name, sep, key = k.partition("/") if isinstance(k, str) else (None, "", None)
            if not sep or name not in parsed:
                want = " and ".join(f"'{n}/<key>'" for n in self._state) or "no entries"
                raise ValueError(f"unexpected entry {k!r} in the state of {cls}; expected "
                                 f"{want}")
            parsed[name][key] = check.float_array(f"state[{k!r}]", state[k])
        keys = set().union(*parsed.values()) if parsed else set()
        for name, arrays in parsed.items():
            for key in keys:
                if key not in arrays:
                    raise ValueError(f"state has no entry '{name}/{key}'; pass a complete "
                                     f"{cls}.state_dict()")
                first = parsed[self._state[0]][key]
                if arrays[key].shape != first.shape or arrays[key].dtype != first.dtype:
                    raise ValueError(f"state['{name}/{key}'] has shape {arrays[key].shape} "
                                     f"({arrays[key].dtype}), state['{self._state[0]}/{key}'] "
                                     f"{first.shape} ({first.dtype}); pass a "
                                     f"{cls}.state_dict() unchanged")
        current = [getattr(self, name) for name in self._state]
        in_place = bool(keys) and all(s is not None for s in current)
        if in_place:
            for name, s in zip(self._state, current):
                for key in keys | set(s):
                    if key not in s or key not in keys:
                        raise ValueError(f"state has keys {sorted(keys)} but {cls}.{name} "
                                         f"has {sorted(map(str, s))}; it is another "
                                         f"network's state; load it into a new {cls}()")
                    a, b = s[key], parsed[name][key]
                    if a.shape != b.shape or a.dtype != b.dtype:
                        raise ValueError(f"state['{name}/{key}'] is {b.shape} {b.dtype} but "
                                         f"{cls}.{name}[{key!r}] is {a.shape} {a.dtype}; it "
                                         f"is another network's state; load it into a new "
                                         f"{cls}()")
        # Everything checked: from here on nothing raises.
        for name, s in zip(self._state, current):
            if in_place:
                for key in keys:
                    s[key][...] = parsed[name][key]
            elif keys:
                setattr(self, name, {key: parsed[name][key].copy() for key in keys})
            else:
                setattr(self, name, None)
        for attr, value in extra.items():
            setattr(self, attr, value)

    def _load_extra(self, state):
        """Checked non-array entries of a state dict, as ``{attribute: value}``."""
        return {}


def _check_param(name, p):
    if not isinstance(p, np.ndarray) or p.dtype not in check.FLOATS:
        got = p.dtype if isinstance(p, np.ndarray) else type(p).__name__
        raise TypeError(f"{name} must be a float32 or float64 numpy.ndarray (updated in "
                        f"place), got {got}; create parameters as float arrays")
    if not (p.flags.c_contiguous and p.flags.writeable):
        raise ValueError(f"{name} must be a writeable C-contiguous array (updated in place); "
                         f"store np.ascontiguousarray({name}) in params once")


def _offset_in(name, p, flat):
    """Element offset of the C-contiguous view `p` inside the 1-D array `flat`."""
    if not isinstance(p, np.ndarray) or p.dtype != flat.dtype:
        got = p.dtype if isinstance(p, np.ndarray) else type(p).__name__
        raise TypeError(f"{name} must be a view into flat ({flat.dtype}), got {got}")
    start = p.__array_interface__["data"][0] - flat.__array_interface__["data"][0]
    if (not p.flags.c_contiguous or start < 0 or start % flat.itemsize
            or start + p.nbytes > flat.nbytes):
        raise ValueError(f"{name} must be a C-contiguous view into flat (e.g. "
                         f"flat[a:b].reshape(shape)); it is not inside flat's memory")
    return start // flat.itemsize


# Each class spells out the book's constructor, its signature and defaults (user-facing);
# what differs is data, given as class keywords (see _Optimizer.__init_subclass__).
class SGD(_Optimizer, kind=_K.SGD):
    """Stochastic gradient descent: ``param -= lr * grad``.

    {sections}
    """

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__(lr)


class Momentum(_Optimizer, kind=_K.MOMENTUM, hypers=("momentum",), state=(("v",), "Velocity")):
    """Momentum SGD: ``v = momentum*v - lr*grad; param += v``.

    {sections}
    """

    def __init__(self, lr: float = 0.01, momentum: float = 0.9) -> None:
        super().__init__(lr, momentum=momentum)


class Nesterov(Momentum, kind=_K.NESTEROV):
    """Nesterov's accelerated gradient, in the book's form (arXiv:1212.0901).

    ``param += momentum**2 * v; param -= (1+momentum)*lr*grad; v = momentum*v - lr*grad``.
    Constructor, attributes and state as :class:`Momentum`.
    """


class AdaGrad(_Optimizer, kind=_K.ADAGRAD, state=(("h",), "Sum of squared gradients")):
    """AdaGrad: ``h += grad**2; param -= lr*grad / (sqrt(h) + 1e-7)``.

    {sections}
    """

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__(lr)


class RMSprop(_Optimizer, kind=_K.RMSPROP, hypers=("decay_rate",),
              state=(("h",), "Running mean of squared gradients")):
    """RMSprop: ``h = decay_rate*h + (1-decay_rate)*grad**2;
    param -= lr*grad / (sqrt(h) + 1e-7)``.

    {sections}
    """

    def __init__(self, lr: float = 0.01, decay_rate: float = 0.99) -> None:
        super().__init__(lr, decay_rate=decay_rate)


class Adam(_Optimizer, kind=_K.ADAM, hypers=("beta1", "beta2"),
           state=(("m", "v"), "First and second moment estimates"),
           attributes="iter : int\n        Updates made so far."):
    """Adam, in the book's form (arXiv:1412.6980v8).

    Each update: ``iter += 1``, ``lr_t = lr * sqrt(1 - beta2**iter) / (1 - beta1**iter)``,
    ``m += (1-beta1)*(grad-m); v += (1-beta2)*(grad**2-v);
    param -= lr_t*m / (sqrt(v) + 1e-7)``.

    {sections}
    """

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999) -> None:
        self.iter = 0
        super().__init__(lr, beta1=beta1, beta2=beta2)

    def peek_hyper(self) -> tuple[float, float, float]:
        it = self.iter + 1
        # The book's expression, in float64.
        lr_t = self.lr * math.sqrt(1.0 - self.beta2 ** it) / (1.0 - self.beta1 ** it)
        return lr_t, self.beta1, self.beta2

    def advance(self) -> None:
        self.iter += 1


    def state_dict(self) -> dict[str, np.ndarray]:
        out = super().state_dict()
        out["iter"] = np.array(self.iter, np.int64)
        return out


    def _load_extra(self, state):
        if "iter" not in state:
            raise ValueError("state has no 'iter' entry; pass a complete Adam.state_dict()")
        it = np.asarray(state["iter"])
        if it.ndim != 0 or it.dtype.kind not in "iu":
            raise TypeError(f"state['iter'] must be an integer (0-d), got {it.dtype} of shape "
                            f"{it.shape}")
        if it < 0:
            raise ValueError(f"state['iter'] must be >= 0, got {int(it)}")
        return {"iter": int(it)}


#: Any of the six optimizers, for type hints (``optimizer: AnyOptimizer``).
AnyOptimizer = SGD | Momentum | Nesterov | AdaGrad | RMSprop | Adam
