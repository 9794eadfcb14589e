"""What the kernels' fastmath flag set allows, and what it must not allow."""

import numba
import numpy as np
import pytest

import mtrl_fast
from mtrl_fast._kernels._jit import FASTMATH


def test_nan_check_survives_the_flags():
    """With ``nnan`` an isnan test may be folded to False; with our set it must not be."""

    @numba.njit(fastmath=set(FASTMATH))
    def count_nan(x):
        count = 0
        for v in x:
            if np.isnan(v) or np.isinf(v):
                count += 1
        return count

    assert count_nan(np.array([1.0, np.nan, np.inf, -np.inf, 2.0])) == 3


@pytest.mark.filterwarnings("ignore:invalid value encountered")
@pytest.mark.parametrize("layout", ["shared", "per-task"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_values_propagate_through_the_kernels(layout, bad):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5, 3) if layout == "shared" else (2, 5, 3))
    W = rng.standard_normal((4, 3))
    A = rng.standard_normal((2, 4))
    Y = rng.standard_normal((2, 5))
    A[0, 0] = bad
    value, grads = mtrl_fast.loss_and_grad(X, Y, W, None, A, "squared", check_finite=False)
    assert not np.isfinite(value)
    assert not np.isfinite(grads.W).all()
