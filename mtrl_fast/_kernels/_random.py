"""Counter-based random numbers for compiled kernels: Philox4x32-10 and Box-Muller normals.

A counter-based generator maps ``(key, counter)`` to random words with no state in between, so
any value can be drawn on its own: the normal at ``(task, row, column)`` is the same whichever
thread, shard or machine draws it, and a loop over columns vectorises (each lane its own
counter). Philox4x32-10 is Salmon et al.'s (SC 2011) generator, the one behind cuRAND's and
JAX's; its ten rounds of 32x32 -> 64-bit products pass BigCrush.

Normals come from the Box-Muller transform, ``r = sqrt(-2 ln u1)``, ``(r cos 2 pi u2, r sin 2 pi u2)``,
with the logarithm and the sine and cosine as polynomials in plain arithmetic (no libm call, which
would keep a loop scalar), evaluated without fastmath (each step of a polynomial one fused
multiply-add), so that every machine computes the same bits. Float32 normals are computed in
float32 from a 32-bit ``u1`` (the tail reaches 6.66 sigma) and a 23-bit angle within its quadrant;
float64 normals in float64 from a 52-bit ``u1`` (8.5 sigma) and a 30-bit angle.
"""

from typing import Any

import numba
import numpy as np

from ._jit import options
from ._math import _float32_bits, _float32_from_bits, _float64_bits, _float64_from_bits, fma

# Compiled into the kernels that call them: exact (every machine the same bits), inlined.
RANDOM_OPTIONS: dict[str, Any] = dict(options(exact=True), inline="always")

_MASK32 = np.uint64(0xFFFFFFFF)
_PHILOX_M0 = np.uint64(0xD2511F53)
_PHILOX_M1 = np.uint64(0xCD9E8D57)
_PHILOX_W0 = np.uint64(0x9E3779B9)
_PHILOX_W1 = np.uint64(0xBB67AE85)
_SHIFT32 = np.uint64(32)


@numba.njit(**RANDOM_OPTIONS)
def philox(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 of the counter ``(c0, c1, c2, c3)`` under the key ``(k0, k1)``: four random
    32-bit words. Every argument and result is a uint64 holding a 32-bit value."""
    for _ in range(10):
        p0 = _PHILOX_M0 * c0
        p1 = _PHILOX_M1 * c2
        c0, c1, c2, c3 = ((p1 >> _SHIFT32) ^ c1 ^ k0, p1 & _MASK32, (p0 >> _SHIFT32) ^ c3 ^ k1, p0 & _MASK32)
        k0 = (k0 + _PHILOX_W0) & _MASK32
        k1 = (k1 + _PHILOX_W1) & _MASK32
    return c0, c1, c2, c3


_TWO52 = 4503599627370496.0  # 2^52: its float64 has the bits 0x4330000000000000
_LN2 = 0.6931471805599453
_SQRT2 = 1.4142135623730951
_L3, _L5, _L7, _L9, _L11, _L13, _L15, _L17, _L19, _L21 = (
    1 / 3,
    1 / 5,
    1 / 7,
    1 / 9,
    1 / 11,
    1 / 13,
    1 / 15,
    1 / 17,
    1 / 19,
    1 / 21,
)
_SQRT_HALF = 0.7071067811865476
_HALF_PI = 1.5707963267948966
# Taylor coefficients of sin and cos, as multiplications (a division would not vectorise well).
_S3, _S5, _S7, _S9, _S11, _S13, _S15, _S17 = (
    -1 / 6,
    1 / 120,
    -1 / 5040,
    1 / 362880,
    -1 / 39916800,
    1 / 6227020800,
    -1 / 1307674368000,
    1 / 355687428096000,
)
_C2, _C4, _C6, _C8, _C10, _C12, _C14, _C16 = (
    -1 / 2,
    1 / 24,
    -1 / 720,
    1 / 40320,
    -1 / 3628800,
    1 / 479001600,
    -1 / 87178291200,
    1 / 20922789888000,
)


@numba.njit(**RANDOM_OPTIONS)
def as_float(k):
    """A uint64 below 2^52 as a float64, exactly: placed in the mantissa of 2^52, then 2^52
    taken away (a conversion every vector unit has; uint64 -> float64 is not one)."""
    return _float64_from_bits(np.int64(k | np.uint64(0x4330000000000000))) - _TWO52


@numba.njit(**RANDOM_OPTIONS)
def minus_two_log_uniform(k, bits):
    """``-2 ln u`` for ``u = (k + 1/2) 2^-bits`` in (0, 1), ``k`` a ``bits``-bit integer (float64).

    ``ln(k + 1/2) = e ln 2 + ln m`` with ``m`` in [sqrt(1/2), sqrt(2)) from the float's own bits,
    and ``ln m = 2 atanh(s)``, ``s = (m - 1) / (m + 1)``, ``|s| < 0.172``: eleven odd terms reach
    float64's precision. The exponent's part is exact, so ``u`` near 1 loses nothing.
    """
    y = as_float(k) + 0.5
    word = _float64_bits(y)
    e = ((word >> 52) & 0x7FF) - 1023
    m = _float64_from_bits((word & 0xFFFFFFFFFFFFF) | 0x3FF0000000000000)
    big = m > _SQRT2
    m = 0.5 * m if big else m
    e = e + 1 if big else e
    s = (m - 1.0) / (m + 1.0)
    z = s * s
    series = fma(_L21, z, _L19)  # Horner, one rounding per step
    series = fma(series, z, _L17)
    series = fma(series, z, _L15)
    series = fma(series, z, _L13)
    series = fma(series, z, _L11)
    series = fma(series, z, _L9)
    series = fma(series, z, _L7)
    series = fma(series, z, _L5)
    series = fma(series, z, _L3)
    series = fma(series, z, 1.0)
    return -2.0 * (np.float64(e - bits) * _LN2 + 2.0 * s * series)


@numba.njit(**RANDOM_OPTIONS)
def unit_circle(word):
    """``(cos, sin)`` of the angle ``2 pi (word + 1/2) / 2^32`` for a 32-bit ``word``.

    The top two bits pick the quadrant; in it the angle is ``pi/4 + t``, ``|t| < pi/4``, whose
    sine and cosine come from Taylor polynomials accurate to float64's precision there.
    """
    quadrant = word >> np.uint64(30)
    f = (as_float(word & np.uint64(0x3FFFFFFF)) + 0.5) * (1.0 / 1073741824.0)
    t = (f - 0.5) * _HALF_PI
    z = t * t
    sin_t = fma(_S17, z, _S15)  # Horner, one rounding per step
    sin_t = fma(sin_t, z, _S13)
    sin_t = fma(sin_t, z, _S11)
    sin_t = fma(sin_t, z, _S9)
    sin_t = fma(sin_t, z, _S7)
    sin_t = fma(sin_t, z, _S5)
    sin_t = fma(sin_t, z, _S3)
    sin_t = fma(sin_t, z, 1.0)
    sin_t = t * sin_t
    cos_t = fma(_C16, z, _C14)  # Horner, one rounding per step
    cos_t = fma(cos_t, z, _C12)
    cos_t = fma(cos_t, z, _C10)
    cos_t = fma(cos_t, z, _C8)
    cos_t = fma(cos_t, z, _C6)
    cos_t = fma(cos_t, z, _C4)
    cos_t = fma(cos_t, z, _C2)
    cos_t = fma(cos_t, z, 1.0)
    x = (cos_t - sin_t) * _SQRT_HALF
    y = (cos_t + sin_t) * _SQRT_HALF
    odd = (quadrant & np.uint64(1)) != 0
    x, y = (-y if odd else x), (x if odd else y)
    half = (quadrant & np.uint64(2)) != 0
    return (-x if half else x), (-y if half else y)


# float32 twins: half the bytes per lane, and polynomials cut to float32's precision.
_F32 = np.float32
_L3_32, _L5_32, _L7_32, _L9_32 = _F32(1 / 3), _F32(1 / 5), _F32(1 / 7), _F32(1 / 9)
_S3_32, _S5_32, _S7_32, _S9_32 = _F32(_S3), _F32(_S5), _F32(_S7), _F32(_S9)
_C2_32, _C4_32, _C6_32, _C8_32, _C10_32 = _F32(_C2), _F32(_C4), _F32(_C6), _F32(_C8), _F32(_C10)


@numba.njit(**RANDOM_OPTIONS)
def _float32_of_word(word):
    """A 32-bit word as a float32, rounded once: its two 16-bit halves converted as int32 (a
    conversion every vector unit has; uint32 -> float32 is not one)."""
    high = np.float32(np.int32(word >> np.uint64(16)))
    low = np.float32(np.int32(word & np.uint64(0xFFFF)))
    return high * _F32(65536.0) + low


@numba.njit(**RANDOM_OPTIONS)
def minus_two_log_uniform32(k):
    """``-2 ln u`` for ``u = (k + 1/2) 2^-32``, ``k`` a 32-bit integer, in float32 arithmetic
    (``k + 1/2`` rounded to float32's 24 bits; the series to its fourth odd term)."""
    y = _float32_of_word(k) + _F32(0.5)
    word = _float32_bits(y)
    e = ((word >> 23) & 0xFF) - 127
    m = _float32_from_bits((word & 0x7FFFFF) | 0x3F800000)
    big = m > _F32(_SQRT2)
    m = _F32(0.5) * m if big else m
    e = e + 1 if big else e
    s = (m - _F32(1.0)) / (m + _F32(1.0))
    z = s * s
    series = fma(_L9_32, z, _L7_32)  # Horner, one rounding per step
    series = fma(series, z, _L5_32)
    series = fma(series, z, _L3_32)
    series = fma(series, z, _F32(1.0))
    return _F32(-2.0) * (np.float32(np.int32(e - 32)) * _F32(_LN2) + _F32(2.0) * s * series)


@numba.njit(**RANDOM_OPTIONS)
def unit_circle32(word):
    """:func:`unit_circle` in float32 arithmetic (23 bits of angle within the quadrant)."""
    quadrant = word >> np.uint64(30)
    f = np.float32(np.int32((word >> np.uint64(7)) & np.uint64(0x7FFFFF))) * _F32(1.0 / 8388608.0) + _F32(
        0.5 / 8388608.0
    )
    t = (f - _F32(0.5)) * _F32(_HALF_PI)
    z = t * t
    sin_t = fma(_S9_32, z, _S7_32)  # Horner, one rounding per step
    sin_t = fma(sin_t, z, _S5_32)
    sin_t = fma(sin_t, z, _S3_32)
    sin_t = fma(sin_t, z, _F32(1.0))
    sin_t = t * sin_t
    cos_t = fma(_C10_32, z, _C8_32)  # Horner, one rounding per step
    cos_t = fma(cos_t, z, _C6_32)
    cos_t = fma(cos_t, z, _C4_32)
    cos_t = fma(cos_t, z, _C2_32)
    cos_t = fma(cos_t, z, _F32(1.0))
    x = (cos_t - sin_t) * _F32(_SQRT_HALF)
    y = (cos_t + sin_t) * _F32(_SQRT_HALF)
    odd = (quadrant & np.uint64(1)) != 0
    x, y = (-y if odd else x), (x if odd else y)
    half = (quadrant & np.uint64(2)) != 0
    return (-x if half else x), (-y if half else y)


@numba.njit(**RANDOM_OPTIONS)
def derive_key(k0, k1, c0, c1, c2, c3):
    """A new key ``(k0', k1')`` from a key and four 32-bit words: the first two words of Philox."""
    w0, w1, _, _ = philox(c0, c1, c2, c3, k0, k1)
    return w0, w1
