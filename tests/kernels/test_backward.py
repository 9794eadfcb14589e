"""``backward``, the vector-Jacobian product of ``forward``: against the reference, finite
differences and ``loss_and_grad``; its validation."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mtrl_fast
from helpers import SIZES, assert_close, make_problem
from mtrl_fast import losses, reference


def _upstream(T, n, dtype, seed=0):
    """Random upstream gradients on a power-of-two grid, so products with them stay exact-ish."""
    rng = np.random.default_rng(seed)
    return (rng.integers(-8, 9, size=(T, n)) / 8).astype(dtype)


def _assert_gradients_close(got, want, dtype):
    for name in ("W", "b", "A"):
        g, w = getattr(got, name), getattr(want, name)
        if w is None:
            assert g is None, name
            continue
        assert g.dtype == dtype and g.shape == w.shape, name
        assert_close(g, w, dtype, scale=max(1.0, float(np.abs(w).max())))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: "n{}-d{}-m{}-T{}".format(*s))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_backward_matches_reference(layout, dtype, size, bias):
    n, d, m, T = size
    X, _, W, b, A = make_problem(layout, dtype, n, d, m, T, bias)
    dF = _upstream(T, n, dtype)
    _assert_gradients_close(mtrl_fast.backward(X, W, b, A, dF), reference.backward(X, W, b, A, dF), dtype)


@pytest.mark.parametrize("loss", mtrl_fast.LOSSES)
def test_loss_and_grad_is_forward_loss_backward(layout, loss):
    X, Y, W, b, A = make_problem(
        layout, np.float64, n=40, d=6, m=9, T=5, labels="real" if loss == "squared" else "sign"
    )
    value, grads = mtrl_fast.loss_and_grad(X, Y, W, b, A, loss)
    F = mtrl_fast.forward(X, W, b, A)
    dF = losses.slope(loss, F, Y) / Y.size
    assert value == pytest.approx(losses.value(loss, F, Y).mean(), rel=1e-12)
    _assert_gradients_close(mtrl_fast.backward(X, W, b, A, dF), grads, np.float64)


def test_backward_matches_finite_differences(layout):
    """``sum(dF * forward(...))`` differentiated numerically, away from the ReLU kinks."""
    rng = np.random.default_rng(5)
    n, d, m, T = 6, 4, 5, 3
    X = rng.standard_normal((n, d) if layout == "shared" else (T, n, d))
    W, b, A = rng.standard_normal((m, d)), rng.standard_normal(m), rng.standard_normal((T, m))
    dF = rng.standard_normal((T, n))
    assert np.abs(X @ W.T + b).min() > 1e-3
    grads = mtrl_fast.backward(X, W, b, A, dF)
    h = 1e-6
    for name, array in {"W": W, "b": b, "A": A}.items():
        numeric = np.empty_like(array)
        for index in np.ndindex(array.shape):
            saved = array[index]
            array[index] = saved + h
            up = float((dF * mtrl_fast.forward(X, W, b, A)).sum())
            array[index] = saved - h
            down = float((dF * mtrl_fast.forward(X, W, b, A)).sum())
            array[index] = saved
            numeric[index] = (up - down) / (2 * h)
        np.testing.assert_allclose(getattr(grads, name), numeric, rtol=1e-6, atol=1e-7, err_msg=name)


@given(
    layout=st.sampled_from(mtrl_fast.LAYOUTS),
    n=st.integers(1, 40),
    d=st.integers(1, 8),
    m=st.integers(1, 12),
    T=st.integers(1, 9),
    seed=st.integers(0, 2**16),
    linear=st.floats(-3, 3),
)
def test_backward_is_linear_in_dF(layout, n, d, m, T, seed, linear):
    X, _, W, b, A = make_problem(layout, np.float64, n, d, m, T, seed=seed)
    dF1, dF2 = _upstream(T, n, np.float64, seed), _upstream(T, n, np.float64, seed + 1)
    combined = mtrl_fast.backward(X, W, b, A, dF1 + linear * dF2)
    parts = [mtrl_fast.backward(X, W, b, A, dF) for dF in (dF1, dF2)]
    for name in ("W", "b", "A"):
        expected = getattr(parts[0], name) + linear * getattr(parts[1], name)
        assert_close(getattr(combined, name), expected, np.float64, scale=max(1.0, float(np.abs(expected).max())))


@pytest.mark.parametrize("api", [mtrl_fast, reference], ids=["kernels", "reference"])
@pytest.mark.parametrize(
    "dF, error, words",
    [
        (np.ones((3, 6)), ValueError, ["dF", "(T, n)"]),
        (np.ones(6), ValueError, ["dF", "(T, n)"]),
        (np.ones((2, 6), dtype=np.float32), TypeError, ["dF", "float64"]),
        (np.full((2, 6), np.nan), ValueError, ["dF", "NaN or Inf"]),
        (None, TypeError, ["dF"]),
    ],
    ids=["T mismatch", "1-d", "other float", "NaN", "None"],
)
def test_backward_validates_dF(api, dF, error, words):
    X, _, W, b, A = make_problem("shared", np.float64, n=6, d=4, m=3, T=2)
    with pytest.raises(error) as raised:
        api.backward(X, W, b, A, dF)
    for word in words:
        assert word in str(raised.value)
