"""Gradients against central finite differences of the objective, in float64."""

import numpy as np
import pytest

import mtrl_fast


def _problem_away_from_kinks(layout, loss, seed):
    """Gaussian inputs with every pre-activation and hinge margin at least 1e-3 from its kink."""
    n, d, m, T = 7, 5, 6, 3
    for attempt in range(1000):
        rng = np.random.default_rng([seed, attempt])
        X = rng.standard_normal((n, d) if layout == "shared" else (T, n, d))
        W = rng.standard_normal((m, d)) / np.sqrt(d)
        b = 0.3 * rng.standard_normal(m)
        A = rng.standard_normal((T, m))
        Y = rng.standard_normal((T, n)) if loss == "squared" else np.where(rng.random((T, n)) < 0.5, -1.0, 1.0)
        Z = X @ W.T + b
        F = mtrl_fast.forward(X, W, b, A)
        if np.abs(Z).min() > 1e-3 and (loss != "hinge" or np.abs(Y * F - 1).min() > 1e-3):
            return X, Y, W, b, A
    raise AssertionError("no kink-free draw found")


@pytest.mark.parametrize("layout", ["shared", "per-task"])
@pytest.mark.parametrize("loss", mtrl_fast.LOSSES)
def test_gradients_match_finite_differences(layout, loss):
    X, Y, W, b, A = _problem_away_from_kinks(layout, loss, seed=3)
    params = {"W": W, "b": b, "A": A}
    _, grads = mtrl_fast.loss_and_grad(X, Y, W, b, A, loss)
    h = 1e-6
    for name, array in params.items():
        numeric = np.empty_like(array)
        for index in np.ndindex(array.shape):
            saved = array[index]
            array[index] = saved + h
            up, _ = mtrl_fast.loss_and_grad(X, Y, W, b, A, loss)
            array[index] = saved - h
            down, _ = mtrl_fast.loss_and_grad(X, Y, W, b, A, loss)
            array[index] = saved
            numeric[index] = (up - down) / (2 * h)
        np.testing.assert_allclose(getattr(grads, name), numeric, rtol=1e-6, atol=1e-9, err_msg=name)
