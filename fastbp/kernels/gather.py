"""Mini-batch gathering from 8-bit pixels, for the training loop.

MNIST-style images are bytes; normalized, every value is ``float32(k) / 255``. The trainer
keeps a uint8 copy of such a training set (a quarter of the float32 bytes) and gathers each
mini-batch from it, converting on the fly: faster than ``np.take`` of the float32 rows,
where every random row is a cache miss (docs/decisions/minibatch-gather.md). The conversion is the loader's own
arithmetic, so the gathered batch is bit-identical to ``np.take`` of the float rows.
"""
import numpy as np
from numba import njit, prange


@njit(cache=True, nogil=True, error_model="numpy")
def _pixel(v, divisor, out_type):
    return out_type(np.float32(v) / np.float32(divisor))


@njit(cache=True, nogil=True, error_model="numpy")
def pixel_table(divisor, lut):
    """Write into ``lut[q]`` (256 entries, float32 or float64) the value
    :func:`gather_pixels` makes of pixel ``q`` for this `divisor`: the table
    :func:`encode_pixels` checks against."""
    for q in range(256):
        lut[q] = _pixel(q, divisor, lut.dtype.type)


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def encode_pixels(x, divisor, lut, out):
    """Write ``round(x * divisor)`` into `out` (uint8) and tell whether that is exact.

    Parameters
    ----------
    x : ndarray, (n, d), float32 or float64, C-contiguous
    divisor : int
        255 for images normalized to [0, 1], 1 for raw 0..255 values.
    lut : ndarray, (256,), dtype of `x`
        From :func:`pixel_table`: the value :func:`gather_pixels` makes of pixel ``q``.
    out : ndarray, (n, d), uint8, written in place.

    Returns
    -------
    bool
        True when every element of `x` equals ``lut[out]``, i.e. :func:`gather_pixels`
        reproduces `x` bit for bit.
    """
    n, d = x.shape
    misses = 0
    for i in prange(n):
        miss = False
        for k in range(d):
            v = x[i, k] * divisor
            ok = v >= 0 and v <= 255  # False for NaN too
            q = np.uint8(v + 0.5) if ok else np.uint8(0)
            out[i, k] = q
            miss |= not ok or lut[q] != x[i, k]
        misses += 1 if miss else 0
    return misses == 0


@njit(cache=True, nogil=True, error_model="numpy")
def gather_pixels(src, idx, divisor, out):
    """``out[r] = src[idx[r]] / divisor`` in `out`'s dtype, row by row.

    Parameters
    ----------
    src : ndarray, (N, d), uint8, C-contiguous
    idx : ndarray, (n,), integer row numbers in [0, N)
    divisor : int
        As passed to :func:`encode_pixels`.
    out : ndarray, (n, d), float32 or float64, C-contiguous, written in place.
    """
    n, d = out.shape
    for r in range(n):
        row = src[idx[r]]
        for k in range(d):
            out[r, k] = _pixel(row[k], divisor, out.dtype.type)
