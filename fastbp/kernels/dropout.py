"""Dropout (Srivastava et al., 2014) with a counter-based random generator.

The mask of element ``i`` (flat, C order) is a pure function of ``(seed, stream, i)``, so a
mask does not depend on the number of threads that draw it, and any part of it can be drawn
without the rest.

The generator is Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as
easy as 1, 2, 3", SC 2011; cuRAND and PyTorch's CUDA generator offer it; it passes
TestU01's BigCrush, and 10 rounds is its authors' default). One call maps a 128-bit
counter and a 64-bit key to four 32-bit words:

* key = ``(seed mod 2**32, seed >> 32)``, for a ``seed`` in ``[0, 2**64)``;
* counter = ``(b mod 2**32, b >> 32, stream mod 2**32, stream >> 32)`` for block
  ``b = i // 4``, a ``stream`` in ``[0, 2**64)``;
* element ``i`` takes word ``i % 4``, ``w``, as ``u = w / 2**32`` in ``[0, 1)``, and is
  kept (mask 1) where ``u > ratio``, i.e. ``w > floor(ratio * 2**32)``.

Distinct streams of one seed (e.g. one per layer and training step) are independent
draws. Every 32x32-bit product fits in 64 bits, so the arithmetic is exact in unsigned
64-bit integers, compiled or run as plain Python.
"""
import numpy as np
from numba import njit, prange

from ._compile import PARALLEL_MIN_ELEMENTS, PARALLEL_MIN_HEAVY_ELEMENTS
from ._dispatch import flat, twins_with_runner
from ._docstrings import with_doc

_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)
_W1 = np.uint64(0xBB67AE85)
_LOW = np.uint64(0xFFFFFFFF)
_32 = np.uint64(32)


@njit(cache=True, nogil=True, inline="always")
def _round(c0, c1, c2, c3, k0, k1):
    p0 = _M0 * c0
    p1 = _M1 * c2
    return (p1 >> _32) ^ c1 ^ k0, p1 & _LOW, (p0 >> _32) ^ c3 ^ k1, p0 & _LOW


@njit(cache=True, nogil=True, inline="always")
def _bump(k0, k1):
    return (k0 + _W0) & _LOW, (k1 + _W1) & _LOW


@njit(cache=True, nogil=True, inline="always")
def _round_bump(c0, c1, c2, c3, k0, k1):
    # One round, then the key schedule's bump.
    c0, c1, c2, c3 = _round(c0, c1, c2, c3, k0, k1)
    k0, k1 = _bump(k0, k1)
    return c0, c1, c2, c3, k0, k1


@njit(cache=True, nogil=True, inline="always")
def _three_rounds(c0, c1, c2, c3, k0, k1):
    c0, c1, c2, c3, k0, k1 = _round_bump(c0, c1, c2, c3, k0, k1)
    c0, c1, c2, c3, k0, k1 = _round_bump(c0, c1, c2, c3, k0, k1)
    return _round_bump(c0, c1, c2, c3, k0, k1)


@njit(cache=True, nogil=True, inline="always")
def philox4x32(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 of counter ``(c0, c1, c2, c3)`` under key ``(k0, k1)``.

    Parameters
    ----------
    c0, c1, c2, c3, k0, k1 : numpy.uint64
        32-bit words (values below ``2**32``) held in unsigned 64-bit integers.

    Returns
    -------
    tuple of 4 numpy.uint64
        The four 32-bit output words, as in Random123's known-answer vectors (counter and
        key all zero give ``0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8``).
    """
    # The 10 rounds written out: as a `for` loop they stayed a loop, which kept LLVM from
    # vectorizing the mask's loop over counters (unrolled: about 9x faster,
    # docs/decisions/elementwise-kernels.md); the helpers are inlined, so the 10 rounds
    # are still straight-line code.
    c0, c1, c2, c3, k0, k1 = _three_rounds(c0, c1, c2, c3, k0, k1)
    c0, c1, c2, c3, k0, k1 = _three_rounds(c0, c1, c2, c3, k0, k1)
    c0, c1, c2, c3, k0, k1 = _three_rounds(c0, c1, c2, c3, k0, k1)
    return _round(c0, c1, c2, c3, k0, k1)


@njit(cache=True, nogil=True)
def _threshold(ratio):
    # u > ratio  <=>  w > ratio * 2**32 (exact in float64)  <=>  w > floor(ratio * 2**32).
    scaled = np.floor(ratio * 4294967296.0)
    if not scaled <= 4294967296.0:
        scaled = 4294967296.0  # ratio >= 1 or NaN: u > ratio holds nowhere, drop everything
    elif scaled < 0:
        scaled = 0.0  # ratio < 0: keep every element with u > 0, as u > ratio would
    return np.uint64(scaled)


#: Counter blocks (4 elements each) per task of the parallel mask: a few tasks per thread
#: for large masks. Any split gives the same mask.
MASK_TASK_BLOCKS = 1 << 14


@njit(cache=True, nogil=True)
def _mask_blocks(threshold, k0, k1, s0, s1, mask, first, count):
    # Elements 4 * first ... 4 * (first + count) - 1 of the flat mask. The words arrive
    # below 2**32; masking them again tells LLVM so, and it multiplies with 32x32-bit vector
    # products (vpmuludq). Written as its own function: the same loop inside a `prange`
    # did not vectorize (docs/decisions/elementwise-kernels.md).
    k0 = k0 & _LOW
    k1 = k1 & _LOW
    s0 = s0 & _LOW
    s1 = s1 & _LOW
    part = mask[4 * first:4 * (first + count)]
    start = np.uint64(first)
    for b in range(count):
        ub = start + np.uint64(b)
        w0, w1, w2, w3 = philox4x32(ub & _LOW, ub >> _32, s0, s1, k0, k1)
        i = 4 * b
        part[i] = w0 > threshold
        part[i + 1] = w1 > threshold
        part[i + 2] = w2 > threshold
        part[i + 3] = w3 > threshold


def _mask_body(threshold, k0, k1, s0, s1, mask):
    # Four elements per Philox call; the (size % 4) last elements are done by the caller.
    blocks = mask.size // 4
    for task in prange((blocks + MASK_TASK_BLOCKS - 1) // MASK_TASK_BLOCKS):
        first = task * MASK_TASK_BLOCKS
        _mask_blocks(threshold, k0, k1, s0, s1, mask, first,
                     min(MASK_TASK_BLOCKS, blocks - first))


def _multiply_body(x, mask, out):
    for i in prange(x.size):
        # A product, not a select: NaN, inf and -0.0 behave as in the book's `x * mask`.
        out[i] = x[i] * out.dtype.type(mask[i])


_mask_serial, _mask_parallel, _mask_run = twins_with_runner(_mask_body)
_multiply_serial, _multiply_parallel, _multiply_run = twins_with_runner(_multiply_body)


@njit(cache=True, nogil=True)
def dropout_mask(ratio, seed, stream, mask):
    """Draw a dropout mask: 1 where ``u(seed, stream, i) > ratio``, else 0.

    ``u`` is uniform in ``[0, 1)`` from Philox4x32-10 of ``(seed, stream, i)`` (see the
    module docstring), so the mask is the same for any number of threads.

    Parameters
    ----------
    ratio : float
        Probability of dropping an element, in ``[0, 1]``.
    seed : int
        In ``[0, 2**64)``.
    stream : int
        In ``[0, 2**64)``; e.g. a layer's index and the training step, combined.
    mask : ndarray, uint8, C-contiguous, any shape
        Written in place with 0 and 1.
    """
    bits = flat(mask)
    threshold = _threshold(ratio)
    s = np.uint64(seed)
    st = np.uint64(stream)
    k0, k1 = s & _LOW, s >> _32
    s0, s1 = st & _LOW, st >> _32
    _mask_run((threshold, k0, k1, s0, s1, bits), bits.size,
              PARALLEL_MIN_HEAVY_ELEMENTS)
    rest = bits.size % 4
    if rest:
        b = np.uint64(bits.size // 4)
        w = philox4x32(b & _LOW, b >> _32, s0, s1, k0, k1)
        for r in range(rest):
            bits[bits.size - rest + r] = w[r] > threshold


def _multiply_parameters(x, out, mask_note=""):
    # The Parameters section of dropout_forward (x -> out) and dropout_backward (dout -> dx).
    return (f"Parameters\n"
            f"    ----------\n"
            f"    {x} : ndarray, float32 or float64, C-contiguous, any shape\n"
            f"    mask : ndarray, uint8 (0 or 1), shape of `{x}`, C-contiguous{mask_note}\n"
            f"    {out} : ndarray, shape and dtype of `{x}`, C-contiguous\n"
            f"        Written in place; may be `{x}` itself.")


@njit(cache=True, nogil=True)
@with_doc(parameters=_multiply_parameters("x", "out"))
def dropout_forward(x, mask, out):
    """``out = x * mask``.

    {parameters}
    """
    _multiply_run((flat(x), flat(mask), flat(out)), x.size,
              PARALLEL_MIN_ELEMENTS)


@njit(cache=True, nogil=True)
@with_doc(parameters=_multiply_parameters("dout", "dx", "\n        The forward pass's mask."))
def dropout_backward(dout, mask, dx):
    """``dx = dout * mask``.

    {parameters}
    """
    dropout_forward(dout, mask, dx)
