"""The argument checks that several modules share, in one place.

Each function takes the argument's name for its message and returns the value converted
(an ndarray, a float, an int) or raises: a wrong type or dtype is a ``TypeError``, a wrong
value or shape a ``ValueError``, and the message names the argument and the fix. The module
imports nothing of fastbp: :mod:`fastbp.ops` and everything above it use it.
"""
import numpy as np
from numpy.typing import ArrayLike, DTypeLike

__all__ = ["FLOATS", "as_array", "float_array", "float_batch", "images", "same_shape",
           "targets", "real", "finite", "unit_interval", "ratio", "integer", "float_dtype"]

#: The dtypes of every float array fastbp computes on.
FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def as_array(name: str, a: ArrayLike) -> np.ndarray:
    """`a` as an ndarray; a ragged or unconvertible array-like is a ValueError naming `name`."""
    if isinstance(a, np.ndarray):
        return a
    try:
        return np.asarray(a)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} is not a rectangular numeric array ({exc})") from None


def float_array(name: str, a: ArrayLike, ndim: int | None = None,
                dtype: DTypeLike | None = None) -> np.ndarray:
    """`a` as a C-contiguous, aligned float32/float64 array of its own shape, checked: of
    `dtype` and with `ndim` dimensions when these are given."""
    arr = as_array(name, a)
    if arr.dtype not in FLOATS and arr.dtype.kind == "f" and arr.dtype.newbyteorder("=") in FLOATS:
        arr = arr.astype(arr.dtype.newbyteorder("="))  # big-endian data, e.g. from a file
    if arr.dtype not in FLOATS:
        fix = ".astype(np.float32)" if dtype is None else f".astype(np.{dtype})"
        raise TypeError(f"{name} must be float32 or float64, got {arr.dtype}; convert it with "
                        f"{name}{fix}")
    if dtype is not None and arr.dtype != dtype:
        raise TypeError(f"{name} is {arr.dtype} but the other arrays are {dtype}; convert it "
                        f"with {name}.astype(np.{dtype})")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    # Not np.ascontiguousarray: it turns a 0-d array into shape (1,).
    if not (arr.flags.c_contiguous and arr.flags.aligned):
        arr = arr.copy(order="C")
    return arr


def float_batch(name: str, a: ArrayLike, dtype: DTypeLike | None = None) -> np.ndarray:
    """:func:`float_array` of a non-empty 2-D batch of rows."""
    arr = float_array(name, a, 2, dtype)
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {arr.shape}); pass at least one row")
    return arr


def images(name: str, x: ArrayLike, dtype: DTypeLike | None = None) -> np.ndarray:
    """:func:`float_array` of a non-empty (N, C, H, W) batch of images."""
    x = float_array(name, x, dtype=dtype)
    if x.ndim != 4:
        raise ValueError(f"{name} must be 4-D (N, C, H, W), got shape {x.shape}; a batch of "
                         f"flat MNIST rows is x.reshape(-1, 1, 28, 28)")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {x.shape}); pass at least one image")
    return x


def same_shape(name: str, a: np.ndarray, shape: tuple[int, ...], ref: str) -> None:
    """A ValueError unless ``a.shape == shape``, the shape of the argument named `ref`."""
    if a.shape != shape:
        raise ValueError(f"{name} must have the shape of {ref}, {shape}, got {a.shape}")


def targets(t: ArrayLike, x: np.ndarray) -> np.ndarray:
    """Targets `t` for logits `x` (n, c): integer labels in ``[0, c)`` as a C-contiguous intp
    (n,) array, or one-hot (or probability) rows as a (n, c) array of `x`'s dtype."""
    t = as_array("t", t)
    n, c = x.shape
    if t.dtype == np.bool_ or not (np.issubdtype(t.dtype, np.integer)
                                  or np.issubdtype(t.dtype, np.floating)):
        raise TypeError(f"t must hold integer labels or float one-hot rows, got {t.dtype}; "
                        "convert labels with t.astype(np.int64)")
    if t.ndim == 1:
        if not np.issubdtype(t.dtype, np.integer):
            raise TypeError(f"1-D t must hold integer labels, got {t.dtype}; convert with "
                            "t.astype(np.int64)")
        if t.shape[0] != n:
            raise ValueError(f"t must have one label per row of x ({n}), got {t.shape[0]}")
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= c:
            raise ValueError(f"labels in t must be in [0, {c}) for {c} classes, got range "
                             f"[{lo}, {hi}]")
        return np.ascontiguousarray(t, dtype=np.intp)
    if t.ndim == 2:
        if t.shape != x.shape:
            raise ValueError(f"one-hot t must have the shape of x, {x.shape}, got {t.shape}")
        return np.ascontiguousarray(t, dtype=x.dtype)
    raise ValueError(f"t must be 1-D labels or 2-D one-hot rows, got shape {t.shape}")


def real(name: str, v: object) -> float:
    """`v` as a Python float; anything but a real scalar is a TypeError naming `name`."""
    if isinstance(v, (str, bytes, complex)) or np.ndim(v) != 0 or np.iscomplexobj(v):
        raise TypeError(f"{name} must be a real number, got {v!r:.60}")
    try:
        return float(v)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__}") from None


def finite(name: str, v: object, low: float | None = None) -> float:
    """:func:`real`, finite and at least `low` (when given)."""
    v = real(name, v)
    if not np.isfinite(v) or (low is not None and v < low):
        raise ValueError(f"{name} must be finite{'' if low is None else f' and >= {low}'}, "
                         f"got {v}")
    return v


def unit_interval(name: str, v: object, example: str = "") -> float:
    """:func:`real` in ``[0, 1)`` (momentum, decay rates, betas); `example` (e.g.
    ``"Adam(beta1=0.9)"``) is added to the message as a fix."""
    v = real(name, v)
    if not 0 <= v < 1:  # NaN fails too
        raise ValueError(f"{name} must be in [0, 1), got {v}" + (f"; e.g. {example}"
                                                                 if example else ""))
    return v


def ratio(v: object, name: str = "ratio") -> float:
    """A dropout ratio: :func:`real` in ``[0, 1]``."""
    v = real(name, v)
    if not 0 <= v <= 1:  # NaN fails too
        raise ValueError(f"{name} (the probability of dropping an element) must be in [0, 1], "
                         f"got {v}")
    return v


def integer(name: str, v: object, minimum: int) -> int:
    """`v` as a Python int of at least `minimum`: a bool or a non-integer type is a TypeError
    (a float is not accepted), a smaller value a ValueError."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return int(v)


def float_dtype(dtype: DTypeLike) -> np.dtype:
    """`dtype` as a numpy dtype, float32 or float64 (a network's parameters), else TypeError."""
    dtype = np.dtype(dtype)
    if dtype not in FLOATS:
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return dtype
