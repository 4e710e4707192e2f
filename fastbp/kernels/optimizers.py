"""The book's optimizers (chapter 6) as in-place update kernels, with L2 weight decay.

Each kernel makes one pass over its arrays: it reads the parameter, its gradient and the
optimizer's state, and writes the new parameter and state, element by element. Arrays are
C-contiguous, of any shape (flattened inside) and of one dtype, float32 or float64. The
weight decay is folded into the gradient, ``g = grad + decay * param`` (the parameter
before this update), which is what the book's ``MultiLayerNetExtend`` adds to ``dW``;
``decay=0`` gives the book's optimizer exactly.

The arithmetic is the book's (``common/optimizer.py``), operation for operation and in
its order, in the array's dtype: every constant is cast to the dtype first, as NumPy casts
a Python float against a float32 array, and constants the book computes from Python floats
(``1 - beta1``, ``(1 + momentum) * lr``) are computed in float64 and then cast. Nothing is
fused into FMAs (no fastmath), so the results are the book's to the bit, in float64 and in
float32, with one exception: NumPy 2 computes the book's float32 Adam step
``lr_t * m / (sqrt(v) + eps)`` in float64 (``lr_t`` is an ``np.float64``, which NumPy 2
no longer demotes), where this kernel stays in float32 like every other step (and like
the book under NumPy 1); the two agree to float32 rounding.

The public functions are ``@njit`` dispatchers: call them from Python or from your own
``@njit`` code. They check nothing (see :mod:`fastbp.ops` for checked versions) and pick
the serial or the parallel twin by element count: the parallel one from ``min_parallel``
elements (default :data:`._compile.PARALLEL_MIN_ELEMENTS` for SGD, Momentum and Nesterov,
streaming passes, and :data:`._compile.PARALLEL_MIN_HEAVY_ELEMENTS` for AdaGrad, RMSprop and
Adam, with a square root and a division per element; the fused training steps pass
:data:`._compile.FUSED_UPDATE_PARALLEL_MIN_ELEMENTS`). The twins give identical bits: every
element is computed on its own.
"""
import numpy as np
from numba import njit, prange

from ._compile import MACHINE_DEFAULT, PARALLEL_MIN_ELEMENTS, PARALLEL_MIN_HEAVY_ELEMENTS
from ._docstrings import with_doc
from ._dispatch import flat, resolved, twins_with_runner

#: Optimizer codes of :func:`optimizer_update`, in the order of the book's chapter 6.
SGD, MOMENTUM, NESTEROV, ADAGRAD, RMSPROP, ADAM = 0, 1, 2, 3, 4, 5


#: The book's ``1e-7`` that keeps AdaGrad's, RMSprop's and Adam's divisions finite.
EPS = 1e-7


#: Below the smallest normal number of its dtype a decaying state value (momentum's v,
#: RMSprop's h, Adam's m and v where the gradient stays 0, e.g. weights of always-blank
#: pixels) is set to 0. Left alone, these values spend thousands of steps as subnormal
#: numbers, which x86 CPUs handle in microcode: measured on Fashion-MNIST, 784-100x4-10,
#: Adam, float32, after 3000 steps 4653 of Adam's m were subnormal and its pass over the
#: parameters took 2.8x as long as with them flushed (docs/decisions/subnormal-state.md).
#: The difference to the book's IEEE arithmetic is below 1.2e-38 (float32) per value.
SMALLEST_NORMAL32 = 1.1754943508222875e-38
SMALLEST_NORMAL64 = 2.2250738585072014e-308


@njit(cache=True, nogil=True, inline="always")
def _smallest_normal(a):
    return a.dtype.type(SMALLEST_NORMAL32 if a.itemsize == 4 else SMALLEST_NORMAL64)


@njit(cache=True, nogil=True, inline="always")
def _flushed(value, like):
    # 0 below the smallest normal number of `like`'s dtype (constants LLVM hoists out of
    # the loop); the comparison is False for NaN: NaN stays NaN.
    return like.dtype.type(0) if abs(value) < _smallest_normal(like) else value


@njit(cache=True, nogil=True, inline="always")
def _decayed(g, wd, p):
    # The gradient with weight decay folded in, ``g + wd * p`` (the parameter before this
    # update), or `g` itself when `wd` is 0.
    return g + wd * p if wd != 0 else g


# The bodies run on 1-D arrays. `if wd != 0` (in _decayed, inlined) keeps decay=0 the
# book's arithmetic exactly (`grad + 0 * param` would turn an infinite parameter's gradient
# into NaN); the condition does not depend on i, so LLVM hoists it out of the loop and both
# loops vectorize.

def _sgd_decay_body(param, grad, lr, decay):
    t = param.dtype.type
    step = t(lr)
    wd = t(decay)
    for i in prange(param.size):
        g = _decayed(grad[i], wd, param[i])
        param[i] -= step * g


def _momentum_body(param, grad, v, lr, momentum, decay):
    t = param.dtype.type
    step, mu, wd = t(lr), t(momentum), t(decay)
    for i in prange(param.size):
        g = _decayed(grad[i], wd, param[i])
        vi = _flushed(mu * v[i] - step * g, param)
        v[i] = vi
        param[i] += vi


def _nesterov_body(param, grad, v, lr, momentum, decay):
    t = param.dtype.type
    step = t(lr)
    mu = t(momentum)
    # The book computes these two products of Python floats in float64.
    mu2 = t(momentum * momentum)
    lead = t((1.0 + momentum) * lr)
    wd = t(decay)
    for i in prange(param.size):
        p = param[i]
        g = _decayed(grad[i], wd, p)
        vi = v[i]
        p += mu2 * vi
        p -= lead * g
        param[i] = p
        vi *= mu
        vi -= step * g
        v[i] = _flushed(vi, param)


def _adagrad_body(param, grad, h, lr, decay):
    t = param.dtype.type
    step, eps, wd = t(lr), t(EPS), t(decay)
    for i in prange(param.size):
        g = _decayed(grad[i], wd, param[i])
        hi = h[i] + g * g
        h[i] = hi
        param[i] -= step * g / (np.sqrt(hi) + eps)


def _rmsprop_body(param, grad, h, lr, decay_rate, decay):
    t = param.dtype.type
    step = t(lr)
    rho = t(decay_rate)
    keep = t(1.0 - decay_rate)
    eps = t(EPS)
    wd = t(decay)
    for i in prange(param.size):
        g = _decayed(grad[i], wd, param[i])
        hi = h[i] * rho
        hi += keep * g * g
        hi = _flushed(hi, param)
        h[i] = hi
        param[i] -= step * g / (np.sqrt(hi) + eps)


def _adam_body(param, grad, m, v, lr_t, beta1, beta2, decay):
    t = param.dtype.type
    step = t(lr_t)
    c1 = t(1.0 - beta1)
    c2 = t(1.0 - beta2)
    eps = t(EPS)
    wd = t(decay)
    for i in prange(param.size):
        g = _decayed(grad[i], wd, param[i])
        mi = m[i]
        mi += c1 * (g - mi)
        mi = _flushed(mi, param)
        m[i] = mi
        vi = v[i]
        vi += c2 * (g * g - vi)
        vi = _flushed(vi, param)
        v[i] = vi
        param[i] -= step * mi / (np.sqrt(vi) + eps)


#: The fused training steps' optimizer parameters, as their docstrings describe them.
STEP_OPTIMIZER_PARAMETERS = (
    "kind : int\n"
    "        The optimizer (:data:`.optimizers.SGD` ... :data:`.optimizers.ADAM`), or -1 to\n"
    "        compute the gradients only.\n"
    "    state1, state2 : ndarray\n"
    "        The optimizer's state at the offsets of `flat` (size 0 when unused).\n"
    "    lr, c1, c2 : float\n"
    "        The optimizer's scalars for this update (see\n"
    "        :func:`.optimizers.optimizer_update`).")

_PARAM_GRAD = ("param : ndarray, float32 or float64, C-contiguous, any shape\n"
               "        Updated in place.\n"
               "    grad : ndarray, shape and dtype of `param`, C-contiguous")

#: The parameter descriptions the update kernels share (filled in by ``with_doc``).
_PARAMETER_DOCS = {
    "param_grad": _PARAM_GRAD,
    "velocity_parameters": "Parameters\n    ----------\n    " + _PARAM_GRAD + "\n"
                           "    v : ndarray, shape and dtype of `param`, C-contiguous\n"
                           "        Velocity (zeros before the first step), updated in place.\n"
                           "    lr : float\n"
                           "        Learning rate.\n"
                           "    momentum : float\n"
                           "        The book's ``momentum`` (0.9 by default there).",
    "lr": "lr : float\n        Learning rate.",
    "decay": "decay : float\n        L2 weight-decay coefficient; 0 gives the book's",
    "decay_sgd": "decay : float\n        L2 weight-decay coefficient; 0 gives plain SGD",
}


# error_model="numpy": a division by zero gives inf/NaN as in NumPy instead of raising
# ZeroDivisionError; the check it replaces is a branch that keeps LLVM from vectorizing.
# (The divisors are sqrt(h) + EPS > 0 anyway; a NaN state propagates as in NumPy.)
_sgd_decay_serial, _sgd_decay_parallel, _sgd_decay_run = twins_with_runner(_sgd_decay_body, error_model="numpy")
_momentum_serial, _momentum_parallel, _momentum_run = twins_with_runner(_momentum_body, error_model="numpy")
_nesterov_serial, _nesterov_parallel, _nesterov_run = twins_with_runner(_nesterov_body, error_model="numpy")
_adagrad_serial, _adagrad_parallel, _adagrad_run = twins_with_runner(_adagrad_body, error_model="numpy")
_rmsprop_serial, _rmsprop_parallel, _rmsprop_run = twins_with_runner(_rmsprop_body, error_model="numpy")
_adam_serial, _adam_parallel, _adam_run = twins_with_runner(_adam_body, error_model="numpy")


@njit(cache=True, nogil=True)
@with_doc(**_PARAMETER_DOCS)
def sgd_decay_update(param, grad, lr, decay=0.0,
                     min_parallel=MACHINE_DEFAULT):
    """SGD with weight decay: ``param -= lr * (grad + decay * param)``, in place.

    Parameters
    ----------
    {param_grad}
    {lr}
    {decay_sgd} (the bits of :func:`sgd_update`).
    min_parallel : int or None
        Elements from which the parallel twin runs; ``MACHINE_DEFAULT`` (-1, the default):
        this machine's threshold of the function's class (module docstring); ``None``
        leaves the parallel twin out of the compiled code (serial at any size, the same
        bits). Every update function takes it.
    """
    _sgd_decay_run((flat(param), flat(grad), lr, decay), param.size,
        resolved(min_parallel, PARALLEL_MIN_ELEMENTS))


@njit(cache=True, nogil=True)
@with_doc(**_PARAMETER_DOCS)
def momentum_update(param, grad, v, lr, momentum, decay=0.0,
                    min_parallel=MACHINE_DEFAULT):
    """Momentum SGD, in place: ``v = momentum*v - lr*g; param += v``.

    ``g = grad + decay * param``.

    {velocity_parameters}
    {decay} ``Momentum``.
    """
    _momentum_run((flat(param), flat(grad), flat(v), lr, momentum, decay), param.size,
        resolved(min_parallel, PARALLEL_MIN_ELEMENTS))


@njit(cache=True, nogil=True)
def nesterov_update(param, grad, v, lr, momentum, decay=0.0,
                    min_parallel=MACHINE_DEFAULT):
    """Nesterov's accelerated gradient (the book's form), in place.

    ``param += momentum*momentum*v; param -= (1+momentum)*lr*g; v *= momentum;
    v -= lr*g`` with ``g = grad + decay * param``. The parameters are those of
    :func:`momentum_update` (`decay` 0 gives the book's ``Nesterov``).
    """
    _nesterov_run((flat(param), flat(grad), flat(v), lr, momentum, decay), param.size,
        resolved(min_parallel, PARALLEL_MIN_ELEMENTS))


@njit(cache=True, nogil=True)
@with_doc(**_PARAMETER_DOCS)
def adagrad_update(param, grad, h, lr, decay=0.0,
                   min_parallel=MACHINE_DEFAULT):
    """AdaGrad, in place: ``h += g*g; param -= lr*g / (sqrt(h) + EPS)``.

    ``g = grad + decay * param``.

    Parameters
    ----------
    {param_grad}
    h : ndarray, shape and dtype of `param`, C-contiguous
        Sum of squared gradients (zeros before the first step), updated in place.
    {lr}
    {decay} ``AdaGrad``.
    """
    _adagrad_run((flat(param), flat(grad), flat(h), lr, decay), param.size,
        resolved(min_parallel, PARALLEL_MIN_HEAVY_ELEMENTS))


@njit(cache=True, nogil=True)
@with_doc(**_PARAMETER_DOCS)
def rmsprop_update(param, grad, h, lr, decay_rate, decay=0.0,
                   min_parallel=MACHINE_DEFAULT):
    """RMSprop, in place.

    ``h *= decay_rate; h += (1-decay_rate)*g*g; param -= lr*g / (sqrt(h) + EPS)`` with
    ``g = grad + decay * param``.

    Parameters
    ----------
    {param_grad}
    h : ndarray, shape and dtype of `param`, C-contiguous
        Running mean of squared gradients (zeros before the first step), updated in place.
    {lr}
    decay_rate : float
        The book's ``decay_rate`` (0.99 by default there).
    {decay} ``RMSprop``.
    """
    _rmsprop_run((flat(param), flat(grad), flat(h), lr, decay_rate, decay), param.size,
        resolved(min_parallel, PARALLEL_MIN_HEAVY_ELEMENTS))


@njit(cache=True, nogil=True)
@with_doc(**_PARAMETER_DOCS)
def adam_update(param, grad, m, v, lr_t, beta1, beta2, decay=0.0,
                min_parallel=MACHINE_DEFAULT):
    """Adam (the book's form), in place.

    ``m += (1-beta1)*(g-m); v += (1-beta2)*(g*g-v); param -= lr_t*m / (sqrt(v) + EPS)``
    with ``g = grad + decay * param``.

    Parameters
    ----------
    {param_grad}
    m, v : ndarray, shape and dtype of `param`, C-contiguous
        First and second moment estimates (zeros before the first step), updated in place.
    lr_t : float
        The bias-corrected step ``lr * sqrt(1 - beta2**t) / (1 - beta1**t)`` for step
        number ``t`` (1 for the first update), computed by the caller in float64 as the
        book does (:meth:`fastbp.optimizers.Adam.next_hyper`).
    beta1, beta2 : float
        The book's ``beta1`` and ``beta2`` (0.9 and 0.999 by default there).
    {decay} ``Adam``.
    """
    _adam_run((flat(param), flat(grad), flat(m), flat(v), lr_t, beta1, beta2, decay),
              param.size,
        resolved(min_parallel, PARALLEL_MIN_HEAVY_ELEMENTS))


@njit(cache=True, nogil=True, inline="always")
def state_part(state, lo, hi):
    """``state[lo:hi]``, the part of an optimizer state that goes with ``param[lo:hi]``; a
    size-0 `state` (the optimizer keeps none) is returned as it is."""
    return state[lo:hi] if state.size > 0 else state


@njit(cache=True, nogil=True)
@with_doc(**_PARAMETER_DOCS)
def optimizer_update(kind, param, grad, state1, state2, lr, c1, c2, decay,
                     min_parallel=MACHINE_DEFAULT):
    """One update of the optimizer `kind` on `param`, in place: the fused steps' entry.

    Parameters
    ----------
    kind : int
        :data:`SGD`, :data:`MOMENTUM`, :data:`NESTEROV`, :data:`ADAGRAD`, :data:`RMSPROP`
        or :data:`ADAM`.
    {param_grad}
    state1 : ndarray, dtype of `param`, C-contiguous
        Momentum's and Nesterov's ``v``, AdaGrad's and RMSprop's ``h``, Adam's ``m``, of
        `param`'s shape, updated in place; for SGD unused (pass a size-0 array).
    state2 : ndarray, dtype of `param`, C-contiguous
        Adam's ``v``, of `param`'s shape, updated in place; unused (size 0) otherwise.
    lr : float
        The learning rate; for Adam the bias-corrected ``lr_t``.
    c1 : float
        ``momentum`` (Momentum, Nesterov), ``decay_rate`` (RMSprop) or ``beta1`` (Adam);
        unused otherwise.
    c2 : float
        ``beta2`` (Adam); unused otherwise.
    decay : float
        L2 weight-decay coefficient, folded into the gradient (0: the book's optimizer).
    min_parallel : int or None
        Passed to `kind`'s own function: ``MACHINE_DEFAULT`` (the default) is its class's
        threshold; ``None``: serial at any size.

    Raises
    ------
    ValueError
        If `kind` is not one of the six codes (nothing is updated).

    Notes
    -----
    :meth:`fastbp.optimizers.SGD.next_hyper` and its siblings return ``(lr, c1, c2)`` for
    one step, and :meth:`~fastbp.optimizers.SGD.flat_state` returns ``(kind, state1,
    state2)``.
    """
    if kind == SGD:
        sgd_decay_update(param, grad, lr, decay, min_parallel)
    elif kind == MOMENTUM:
        momentum_update(param, grad, state1, lr, c1, decay, min_parallel)
    elif kind == NESTEROV:
        nesterov_update(param, grad, state1, lr, c1, decay, min_parallel)
    elif kind == ADAGRAD:
        adagrad_update(param, grad, state1, lr, decay, min_parallel)
    elif kind == RMSPROP:
        rmsprop_update(param, grad, state1, lr, c1, decay, min_parallel)
    elif kind == ADAM:
        adam_update(param, grad, state1, state2, lr, c1, c2, decay, min_parallel)
    else:
        raise ValueError("optimizer_update: kind must be one of SGD, MOMENTUM, NESTEROV, "
                         "ADAGRAD, RMSPROP, ADAM (0-5)")
