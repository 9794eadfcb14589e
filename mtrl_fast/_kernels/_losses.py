"""The losses as scalar kernels: value and derivative in the arrays' precision, and a vectorised run.

Scalar twins of the NumPy definitions in ``mtrl_fast.losses``, tested against them.
"""

import numba
import numpy as np
from numba import types
from numba.extending import overload

from ..losses import TABLE, loss_id
from ._jit import COMPILE_OPTIONS as _COMPILE_OPTIONS
from ._math import _exp_neg, _exp_neg32, _log1p_unit, _log1p_unit32

SQUARED, LOGISTIC, HINGE, CORRELATION = (loss_id(name) for name in ("squared", "logistic", "hinge", "correlation"))
# Not a loss, and outside the table's ids: the "labels" are the upstream gradient dF itself (value 0,
# slope y), so that ``backward`` runs through the same fused passes as ``loss_and_grad``.
UPSTREAM = -1


def loss_cost(loss, dtype):
    """Work of one loss evaluation, in elements of a plain elementwise pass (the table's cost)."""
    if loss == UPSTREAM:
        return 1
    return TABLE[loss].cost[0 if np.dtype(dtype).itemsize == 4 else 1]  # `dtype == np.float32` is slower


@numba.njit(inline="always", **_COMPILE_OPTIONS)
def _loss_value_and_slope64(loss, f, y):
    """Loss value and its derivative in ``f``, in float64 (see ``losses`` for the definitions)."""
    if loss == SQUARED:
        e = f - y
        return 0.5 * e * e, e
    if loss == LOGISTIC:
        # log(1 + exp(-m)) = max(-m, 0) + log1p(exp(-|m|)), branch-free so loops vectorise.
        margin = y * f
        e = _exp_neg(abs(margin))
        value = max(-margin, 0.0) + _log1p_unit(e)
        slope = -y * (e if margin >= 0.0 else 1.0) / (1.0 + e)
        # min/max above would drop a NaN; keep it visible. Selects, not an early return, so
        # that loops over this function still vectorise.
        keep = margin == margin
        return (value if keep else margin), (slope if keep else margin)
    if loss == HINGE:
        margin = y * f
        if margin >= 1.0:
            return 0.0, 0.0
        return 1.0 - margin, -y  # a NaN margin lands here and stays NaN
    if loss == UPSTREAM:
        return 0.0, y
    # CORRELATION, the last id: a fifth branch for ids outside the table kept the float64 loop from
    # vectorising; ids are checked before any compiled code runs.
    return -y * f, -y


@numba.njit(inline="always", **_COMPILE_OPTIONS)
def _loss_value_and_slope32(loss, f, y):
    """``_loss_value_and_slope64`` in float32."""
    zero = np.float32(0.0)
    one = np.float32(1.0)
    if loss == SQUARED:
        e = f - y
        return np.float32(0.5) * e * e, e
    if loss == LOGISTIC:
        margin = y * f
        e = _exp_neg32(abs(margin))
        value = max(-margin, zero) + _log1p_unit32(e)
        slope = -y * (e if margin >= zero else one) / (one + e)
        keep = margin == margin
        return (value if keep else margin), (slope if keep else margin)
    if loss == HINGE:
        margin = y * f
        if margin >= one:
            return zero, zero
        return one - margin, -y
    if loss == UPSTREAM:
        return zero, y
    return -y * f, -y  # CORRELATION (see the float64 twin)


def _loss_value_and_slope(loss, f, y):
    """Loss value and its derivative in ``f``, in the precision of ``f`` (float32 or float64).

    Kernels call this with their arrays' elements, and the overload below picks the float32 or
    float64 implementation when they compile; from Python it dispatches the same way.
    """
    if loss != UPSTREAM and not 0 <= loss < len(TABLE):
        raise ValueError(f"no loss has id {loss}: ids are positions in losses.TABLE")
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
