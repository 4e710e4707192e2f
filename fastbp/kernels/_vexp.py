"""``exp`` of a non-positive number, written so LLVM vectorizes loops that call it.

``np.exp`` in a Numba loop is a scalar libm call (no vector math library is bundled), so a
sigmoid ran at a small fraction of the memory-copy bandwidth
(docs/decisions/vectorized-exp.md). This version is the textbook reduction ``x = k ln2 + r``,
``|r| <= ln2/2``, a polynomial for ``exp(r)`` and ``2**k`` built from its bits.

- The polynomials interpolate ``exp`` at the Chebyshev nodes of ``[-ln2/2, ln2/2]``
  (coefficients computed in extended precision, see ``_chebyshev_fit``): degree 6 for
  float32 (approximation error 2e-9, below the rounding of the evaluation) and 11 for
  float64 (1.5e-17). Taylor polynomials needed degrees 7 and 13 for the same accuracy.
- They are evaluated by Estrin's scheme (powers ``r**2``, ``r**4``, ``r**8`` and independent
  pairs) rather than Horner's: the same number of operations, but a dependency chain of
  ~4 multiply-adds instead of 6 or 11, which is what limited throughput on AVX2.
- ``k`` stays a float: ``2**k`` is read off the bits of ``k + (2**23 + 127)`` (float32) or
  ``k + (2**52 + 1023)`` (float64), shifted into the exponent field. AVX2 has no vector
  float64 -> int64 conversion, so the earlier ``int(k)`` made LLVM split every float64 vector
  into 4 scalar conversions (sigmoid forward float64 at 23 % of copy bandwidth).

All branch-free, so a loop of it becomes SIMD code (AVX2 or AVX-512, whatever the host has).
Domain: ``x <= 0`` or NaN (the sigmoid and softmax only need that). NaN gives NaN, ``-inf``
and anything below the underflow limit give 0 (subnormal results are flushed to 0: a
difference of at most 1.2e-38 / 2.3e-308).
"""
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

_LOG2E = 1.4426950408889634
_CUTOFF = {np.float32: -87.0}     # below it the compiled exp gives 0 (float64: -708)

#: exp(r) ~= sum(c[i] * r**i) on [-ln2/2, ln2/2]; from ``_chebyshev_fit(6)`` / ``(11)``.
_C32 = (1.0, 1.0, 0.5, 0.16666415333747864, 0.04166635125875473, 0.00837512593716383,
        0.0013941108481958508)
_C64 = (1.0, 1.0, 0.5000000000000019, 0.16666666666666693, 0.04166666666648784,
        0.008333333333314975, 0.0013888888952377377, 0.00019841269897743688,
        2.4801485420937575e-05, 2.755723504119593e-06, 2.7632660654004916e-07,
        2.5111724572097628e-08)


def _chebyshev_fit(degree):
    """Coefficients (lowest first, as long doubles) of the polynomial of `degree` that
    interpolates ``exp`` at the Chebyshev nodes of ``[-ln2/2, ln2/2]``: near the minimax
    polynomial. How ``_C32`` and ``_C64`` were made (rounded to float32 / float64)."""
    n = degree + 1
    half = np.longdouble(np.log(2)) / 2
    nodes = np.cos((2 * np.arange(n, dtype=np.longdouble) + 1) * np.pi / (2 * n)) * half
    a = np.vander(nodes, n, increasing=True)
    b = np.exp(nodes)
    # Gaussian elimination in long double: np.linalg.solve would round to float64 first.
    for i in range(n):
        for j in range(i + 1, n):
            f = a[j, i] / a[i, i]
            a[j] -= f * a[i]
            b[j] -= f * b[i]
    c = np.zeros(n, dtype=np.longdouble)
    for i in range(n - 1, -1, -1):
        c[i] = (b[i] - a[i, i + 1:] @ c[i + 1:]) / a[i, i]
    return c


@intrinsic
def _pow2(typingctx, k):
    """``2.0 ** k`` for a float `k` holding an integer with ``2**k`` a normal number.

    ``k + 2**23 + 127`` (float32; ``2**52 + 1023`` for float64) holds ``k + 127`` in its
    low mantissa bits; shifting them into the exponent field gives ``2**k``. Float adds and
    integer shifts only, so it stays in vector registers.
    """
    if not isinstance(k, types.Float):
        return None
    bits, shift, magic = (32, 23, 2.0 ** 23 + 127) if k.bitwidth == 32 else (
        64, 52, 2.0 ** 52 + 1023)

    def codegen(context, builder, signature, args):
        ity = ir.IntType(bits)
        s = builder.fadd(args[0], ir.Constant(args[0].type, magic))
        e = builder.shl(builder.bitcast(s, ity), ity(shift))
        return builder.bitcast(e, args[0].type)
    return k(k), codegen


def exp_nonpos(x):
    """``exp(x)`` for ``x <= 0`` (or NaN), in `x`'s float type, vectorizable (Numba code)."""
    # Plain NumPy, for NUMBA_DISABLE_JIT=1 runs (compiled code uses the overload below), with
    # the overload's flush to 0 below its cut-off, so no underflow warning is raised either.
    return type(x)(0.0) if x < _CUTOFF.get(type(x), -708.0) else np.exp(x)


@overload(exp_nonpos, jit_options={"cache": True}, inline="always")
def _exp_nonpos_overload(x):
    if not isinstance(x, types.Float):
        return None
    if x.bitwidth == 32:
        f = np.float32
        lo = f(-87.0)   # exp(-87) = 1.6e-38 > float32's smallest normal
        ln2_hi = f(0.693145751953125)       # exact in float32, so k * ln2_hi is exact
        ln2_lo = f(1.4286068203094173e-06)  # ln2 - ln2_hi
        log2e, half, zero = f(_LOG2E), f(0.5), f(0.0)
        c0, c1, c2, c3, c4, c5, c6 = (f(c) for c in _C32)

        def impl(x):
            xc = lo if x < lo else x          # NaN stays NaN (comparison is false)
            k = np.floor(xc * log2e + half)
            r = (xc - k * ln2_hi) - k * ln2_lo
            r2 = r * r
            p = (c0 + c1 * r) + (c2 + c3 * r) * r2 + ((c4 + c5 * r) + c6 * r2) * (r2 * r2)
            y = p * _pow2(k)                  # NaN: p is NaN, whatever the bits of 2**k
            return zero if x < lo else y
        return impl
    lo = -708.0
    ln2_hi, ln2_lo = 6.93147180369123816490e-01, 1.90821492927058770002e-10
    c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11 = _C64

    def impl(x):
        xc = lo if x < lo else x
        k = np.floor(xc * _LOG2E + 0.5)
        r = (xc - k * ln2_hi) - k * ln2_lo
        r2 = r * r
        r4 = r2 * r2
        p = (((c0 + c1 * r) + (c2 + c3 * r) * r2)
             + ((c4 + c5 * r) + (c6 + c7 * r) * r2) * r4
             + ((c8 + c9 * r) + (c10 + c11 * r) * r2) * (r4 * r4))
        y = p * _pow2(k)
        return 0.0 if x < lo else y
    return impl
