"""Vectorisable math for the kernels: ``exp(-x)`` and ``log1p`` for the logistic loss, in float64
and float32; reinterpreting a float's bits as an integer and back; a fused multiply-add.

libm's ``exp`` and ``log1p`` are opaque calls that keep a loop scalar; these polynomial forms
vectorise. Each has a float32 twin with float32 constants and shorter polynomials, so twice as
many lanes per vector and about half the terms.
"""

import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ._jit import COMPILE_OPTIONS as _COMPILE_OPTIONS


@intrinsic
def _float64_from_bits(typingctx, bits):
    """Reinterpret an int64's bits as a float64 (a register move, which LLVM vectorises)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@intrinsic
def _float32_from_bits(typingctx, bits):
    """Reinterpret an int32's bits as a float32."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@intrinsic
def _float64_bits(typingctx, value):
    """Reinterpret a float64's bits as an int64 (a register move, which LLVM vectorises)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _float32_bits(typingctx, value):
    """Reinterpret a float32's bits as an int32."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def fma(typingctx, a, b, c):
    """``a * b + c`` rounded once (LLVM's ``llvm.fma``): one instruction wherever the CPU has FMA,
    and the same correctly rounded result everywhere (a library call where it has not), unlike
    contracting ``a * b + c``, which fastmath does only where FMA exists."""
    if not (a == b == c and isinstance(a, types.Float)):
        return None

    def codegen(context, builder, signature, args):
        llvm_type = context.get_value_type(signature.args[0])
        function = builder.module.declare_intrinsic(
            "llvm.fma", [llvm_type], ir.FunctionType(llvm_type, [llvm_type] * 3)
        )
        return builder.call(function, args)

    return a(a, b, c), codegen


_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that k * _LN2_HI is exact for |k| < 2^11
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e00
_LN2 = 0.6931471805599453


@numba.njit(inline="always", **_COMPILE_OPTIONS)
def _exp_neg(x):
    """``exp(-x)`` for ``x >= 0`` to about 1e-15 relative, with no libm call.

    ``-x = k ln 2 + r`` with
    ``|r| <= ln 2 / 2``; ``exp(r)`` by its degree-13 Taylor polynomial (error below 1e-17);
    ``2^k`` from its exponent bits.
    """
    x = min(x, 745.0)  # beyond this exp(-x) is below the smallest subnormal
    k = math.floor(-x * _INV_LN2 + 0.5)
    r = (-x - k * _LN2_HI) - k * _LN2_LO
    # Horner written out: a loop over a tuple of coefficients kept the logistic pass from
    # vectorising.
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    # 2^k in two factors so that k down to -1075 (subnormal results) stays representable.
    half = np.int64(k) // 2
    return p * _float64_from_bits((half + 1023) << 52) * _float64_from_bits((np.int64(k) - half + 1023) << 52)


@numba.njit(inline="always", **_COMPILE_OPTIONS)
def _log1p_unit(e):
    """``log(1 + e)`` for ``0 <= e <= 1`` to about 1e-15 relative, with no libm call.

    ``log v = 2 atanh(s)``, ``s = (v - 1) / (v + 1)``, with ``v = 1 + e`` or ``(1 + e) / 2`` so
    that ``|s| <= 0.172``; the odd series to ``s^23`` then errs below 1e-17. ``s = e / (2 + e)``
    keeps full relative precision for small ``e``.
    """
    upper = e > 0.41421356237309503  # sqrt(2) - 1
    s = (e - 1.0 if upper else e) / (e + 3.0 if upper else e + 2.0)  # one division, two selects
    s2 = s * s
    p = 1.0 / 23.0
    p = p * s2 + 1.0 / 21.0
    p = p * s2 + 1.0 / 19.0
    p = p * s2 + 1.0 / 17.0
    p = p * s2 + 1.0 / 15.0
    p = p * s2 + 1.0 / 13.0
    p = p * s2 + 1.0 / 11.0
    p = p * s2 + 1.0 / 9.0
    p = p * s2 + 1.0 / 7.0
    p = p * s2 + 1.0 / 5.0
    p = p * s2 + 1.0 / 3.0
    p = p * s2 + 1.0
    return 2.0 * s * p + (_LN2 if upper else 0.0)


# float32 twins: the same forms with float32 constants and shorter polynomials, so twice as many
# lanes per vector and about half the terms.

_LN2_HI_32 = np.float32(0.693359375)  # 10 significant bits: k * _LN2_HI_32 is exact for |k| < 2^14
_LN2_LO_32 = np.float32(-2.12194440e-4)
_INV_LN2_32 = np.float32(1.44269504)
_LN2_32 = np.float32(0.6931472)


@numba.njit(inline="always", **_COMPILE_OPTIONS)
def _exp_neg32(x):
    """``exp(-x)`` for ``x >= 0`` in float32 to about 1e-7 relative (see ``_exp_neg``).

    Degree-7 Taylor polynomial on ``|r| <= ln 2 / 2``: truncation error below 1e-8.
    """
    x = min(x, np.float32(104.0))  # exp(-104) is below the smallest float32 subnormal
    k = np.floor(-x * _INV_LN2_32 + np.float32(0.5))
    r = (-x - k * _LN2_HI_32) - k * _LN2_LO_32
    p = np.float32(1.0 / 5040.0)
    p = p * r + np.float32(1.0 / 720.0)
    p = p * r + np.float32(1.0 / 120.0)
    p = p * r + np.float32(1.0 / 24.0)
    p = p * r + np.float32(1.0 / 6.0)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    ki = np.int32(k)
    half = ki >> np.int32(1)
    bias = np.int32(127)
    return (
        p * _float32_from_bits((half + bias) << np.int32(23)) * _float32_from_bits((ki - half + bias) << np.int32(23))
    )


@numba.njit(inline="always", **_COMPILE_OPTIONS)
def _log1p_unit32(e):
    """``log(1 + e)`` for ``0 <= e <= 1`` in float32 to about 1e-7 relative (see ``_log1p_unit``).

    The odd series to ``s^9`` errs below 3e-9 for ``|s| <= 0.172``.
    """
    upper = e > np.float32(0.41421356)
    s = (e - np.float32(1.0) if upper else e) / (e + np.float32(3.0) if upper else e + np.float32(2.0))
    s2 = s * s
    p = np.float32(1.0 / 9.0)
    p = p * s2 + np.float32(1.0 / 7.0)
    p = p * s2 + np.float32(1.0 / 5.0)
    p = p * s2 + np.float32(1.0 / 3.0)
    p = p * s2 + np.float32(1.0)
    return np.float32(2.0) * s * p + (_LN2_32 if upper else np.float32(0.0))
