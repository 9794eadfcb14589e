"""Shared test inputs and the project-wide tolerance."""
import numpy as np
import pytest

# One tolerance per dtype, relative to the largest entry of the reference result.
RTOL = {np.float32: 2e-5, np.float64: 1e-12}


def make_problem(layout="shared", dtype=np.float64, n=5, d=4, m=3, T=2, bias=True, seed=0, labels="sign"):
    """Inputs whose pre-activations and outputs are exact in float32 and never zero.

    ``X`` holds small integers, ``W`` and ``A`` integers over a power of two and ``b`` odd
    numbers over a larger power of two, so ``X W^T + b`` is exact in both dtypes and never
    sits on the ReLU kink; float32 and float64 then agree up to the loss derivative's rounding.
    """
    rng = np.random.default_rng(seed)
    x_shape = (n, d) if layout == "shared" else (T, n, d)
    X = rng.integers(-3, 4, size=x_shape).astype(dtype)
    W = (rng.integers(-16, 17, size=(m, d)) / 16).astype(dtype)
    b = ((2 * rng.integers(-32, 32, size=m) + 1) / 64).astype(dtype) if bias else None
    A = (rng.integers(-8, 9, size=(T, m)) / 32).astype(dtype)
    if labels == "sign":
        Y = np.where(rng.random((T, n)) < 0.5, -1, 1).astype(dtype)
    else:
        Y = rng.standard_normal((T, n)).astype(dtype)
    return X, Y, W, b, A


def assert_close(actual, expected, dtype):
    """``actual`` matches ``expected`` within the dtype's tolerance, relative to max |expected|."""
    expected = np.asarray(expected)
    actual = np.asarray(actual)
    assert actual.shape == expected.shape
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-30)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=RTOL[dtype] * scale)


@pytest.fixture(params=["shared", "per-task"])
def layout(request):
    return request.param


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param
