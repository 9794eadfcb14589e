"""The losses as scalar kernels: value and derivative in the arrays' precision, and a vectorised run.

Scalar twins of the NumPy definitions in ``mtrl_fast.losses``, tested against them.
"""

import numba
import numpy as np
from numba import types
from numba.extending import overload

from ..losses import TABLE, by_code, loss_id
from ._jit import COMPILE_OPTIONS as _COMPILE_OPTIONS
from ._math import _exp_neg, _exp_neg32, _log1p_unit, _log1p_unit32

# Each loss's branch below is chosen by the code its row in losses.TABLE names.
SQUARED, LOGISTIC, HINGE, CORRELATION = (loss_id(name) for name in ("squared", "logistic", "hinge", "correlation"))
# Not a loss, and outside the table's codes: the "labels" are the upstream gradient dF itself (value
# 0, slope y), so that ``backward`` runs through the same fused passes as ``loss_and_grad``.
UPSTREAM = -1


def unbranched(table):
    """The losses of ``table`` that have no branch in the kernels (a new row needs one here)."""
    return [row.name for row in table if row.code not in (SQUARED, LOGISTIC, HINGE, CORRELATION)]


if unbranched(TABLE) or UPSTREAM in (row.code for row in TABLE):
    raise ImportError(f"losses without a branch in the kernels: {unbranched(TABLE)} (or a code of -1)")


def loss_cost(loss, dtype):
    """Work of one loss evaluation, in elements of a plain elementwise pass (the table's cost)."""
    if loss == UPSTREAM:
        return 1
    return by_code(loss).cost[0 if np.dtype(dtype).itemsize == 4 else 1]  # `dtype == np.float32` is slower


def _value_and_slope_in(float_type, exp_neg, log1p_unit):
    """The loss value and its derivative in ``f``, in ``float_type``: the float32 and float64 twins
    are this one source (see ``losses`` for the definitions)."""
    zero, one, half = float_type(0.0), float_type(1.0), float_type(0.5)

    @numba.njit(inline="always", **_COMPILE_OPTIONS)
    def value_and_slope(loss, f, y):
        if loss == SQUARED:
            e = f - y
            return half * e * e, e
        if loss == LOGISTIC:
            # log(1 + exp(-m)) = max(-m, 0) + log1p(exp(-|m|)), branch-free so loops vectorise.
            margin = y * f
            e = exp_neg(abs(margin))
            value = max(-margin, zero) + log1p_unit(e)
            slope = -y * (e if margin >= zero else one) / (one + e)
            # min/max above would drop a NaN; keep it visible. Selects, not an early return, so
            # that loops over this function still vectorise.
            keep = margin == margin
            return (value if keep else margin), (slope if keep else margin)
        if loss == HINGE:
            margin = y * f
            if margin >= one:
                return zero, zero
            return one - margin, -y  # a NaN margin lands here and stays NaN
        if loss == UPSTREAM:
            return zero, y
        # CORRELATION, with no test of its own: a fifth branch for codes outside the table kept the
        # float64 loop from vectorising. Codes are checked before any compiled code runs, and every
        # row of the table has a branch here (checked at import).
        return -y * f, -y

    return value_and_slope


_loss_value_and_slope64 = _value_and_slope_in(np.float64, _exp_neg, _log1p_unit)
_loss_value_and_slope32 = _value_and_slope_in(np.float32, _exp_neg32, _log1p_unit32)


def _loss_value_and_slope(loss, f, y):
    """Loss value and its derivative in ``f``, in the precision of ``f`` (float32 or float64).

    Kernels call this with their arrays' elements, and the overload below picks the float32 or
    float64 implementation when they compile; from Python it dispatches the same way.
    """
    if loss != UPSTREAM:
        by_code(loss)  # raises for a code of no loss
    if isinstance(f, np.float32):
        return _loss_value_and_slope32(loss, f, np.float32(y))
    return _loss_value_and_slope64(loss, f, y)


@overload(
    _loss_value_and_slope,
    inline="always",
    jit_options=dict(fastmath=_COMPILE_OPTIONS["fastmath"], error_model=_COMPILE_OPTIONS["error_model"]),
)
def _loss_value_and_slope_compiled(loss, f, y):
    if f == types.float32:
        return lambda loss, f, y: _loss_value_and_slope32(loss, f, y)
    return lambda loss, f, y: _loss_value_and_slope64(loss, f, y)


@numba.njit(inline="always", **_COMPILE_OPTIONS)
def _loss_run(loss, F, Y, scale):
    """Sum of ``loss(F, Y)`` over a short run, in the arrays' precision; overwrites ``F`` with
    ``scale * loss'(F, Y)``. One vectorised loop: runs stay short (``_SUM_STRETCH``) so that a
    float32 sum stays accurate."""
    total = F.dtype.type(0.0)
    for i in range(F.shape[0]):
        value, slope = _loss_value_and_slope(loss, F[i], Y[i])
        total += value
        F[i] = scale * slope
    return total
