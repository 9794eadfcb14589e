"""Subspace metrics on known cases, and the ridge probe."""

import numpy as np
import pytest

from mtrl_fast.paper.metrics import RidgeProbe, energy_outside, probe_accuracy, relu_features, subspace_distance
from mtrl_fast.paper.tasks import make_task_family, orthonormal_basis


@pytest.fixture
def basis():
    Q = orthonormal_basis(20, 8, np.random.default_rng(0))
    return Q[:, :3], Q[:, 3:]  # M (20, 3) and an orthogonal complement piece


def test_rows_inside_the_subspace_give_zero(basis):
    M, _ = basis
    W = np.random.default_rng(1).standard_normal((10, 3)) @ M.T
    assert subspace_distance(W, M) == pytest.approx(0.0, abs=1e-7)
    assert energy_outside(W, M) == pytest.approx(0.0, abs=1e-12)


def test_orthogonal_rows_give_one(basis):
    M, outside = basis
    W = np.random.default_rng(2).standard_normal((10, 5)) @ outside.T
    assert subspace_distance(W, M) == pytest.approx(1.0, abs=1e-12)
    assert energy_outside(W, M) == pytest.approx(1.0, abs=1e-12)


def test_one_missing_direction_gives_one_and_partial_energy(basis):
    M, outside = basis
    # Two of three directions learned, plus one orthogonal direction: the top-3 right singular
    # subspace misses a direction of M entirely.
    W = np.stack([M[:, 0], M[:, 1], outside[:, 0]]) * np.array([[3.0], [2.0], [1.0]])
    assert subspace_distance(W, M) == pytest.approx(1.0, abs=1e-12)
    assert energy_outside(W, M) == pytest.approx(1.0 / 14.0)


def test_known_angle(basis):
    M, outside = basis
    theta = 0.3
    tilted = np.cos(theta) * M[:, 2] + np.sin(theta) * outside[:, 0]
    W = np.stack([M[:, 0], M[:, 1], tilted])
    assert subspace_distance(W, M) == pytest.approx(np.sin(theta), rel=1e-10)
    assert energy_outside(W, M) == pytest.approx(np.sin(theta) ** 2 / 3)


def test_metrics_validate(basis):
    M, _ = basis
    with pytest.raises(ValueError, match="same d"):
        subspace_distance(np.ones((4, 19)), M)
    with pytest.raises(ValueError, match="at least r = 3 rows"):
        subspace_distance(np.ones((2, 20)), M)
    with pytest.raises(ValueError, match="W is zero"):
        energy_outside(np.zeros((4, 20)), M)


def test_relu_features_ignore_row_scale():
    rng = np.random.default_rng(3)
    X, W, b = rng.standard_normal((7, 5)), rng.standard_normal((4, 5)), rng.standard_normal(4)
    scales = np.array([1.0, 10.0, 0.1, 3.0])
    np.testing.assert_allclose(relu_features(X, W * scales[:, None], b * scales), relu_features(X, W, b))


def test_ridge_probe_matches_closed_form_and_picks_a_penalty():
    rng = np.random.default_rng(4)
    Phi = rng.standard_normal((30, 50))
    y = np.sign(Phi[:, 0] + 0.1 * rng.standard_normal(30))
    probe = RidgeProbe().fit(Phi, y)
    Phi_c, y_c = Phi - Phi.mean(0), y - y.mean()
    expected = np.linalg.solve(Phi_c.T @ Phi_c + probe.penalty_ * np.eye(50), Phi_c.T @ y_c)
    np.testing.assert_allclose(probe.coef_, expected, atol=1e-8)
    assert probe.penalty_ > 0


def test_ridge_probe_leave_one_out_is_exact():
    """The closed-form leave-one-out residuals equal refitting without each point."""
    rng = np.random.default_rng(5)
    Phi, y = rng.standard_normal((12, 6)), rng.standard_normal(12)
    probe = RidgeProbe(penalties=(0.5,)).fit(Phi, y)
    lam = probe.penalty_
    for i in range(12):
        keep = np.arange(12) != i
        refit = RidgeProbe(penalties=(0.5,))
        refit.fit(Phi[keep], y[keep])
        # Same absolute penalty for the refit, so solve directly:
        P, t = Phi[keep] - Phi[keep].mean(0), y[keep] - y[keep].mean()
        w = np.linalg.solve(P.T @ P + lam * np.eye(6), P.T @ t)
        loo_prediction = (Phi[i] - Phi[keep].mean(0)) @ w + y[keep].mean()
        # Closed form used by fit:
        Phi_c, y_c = Phi - Phi.mean(0), y - y.mean()
        H = Phi_c @ np.linalg.solve(Phi_c.T @ Phi_c + lam * np.eye(6), Phi_c.T) + 1.0 / 12
        fitted = H @ y_c + y.mean()
        closed = y[i] - (y[i] - fitted[i]) / (1 - H[i, i])
        assert loo_prediction == pytest.approx(closed, rel=1e-8)


def test_probe_accuracy_orders_oracle_above_orthogonal_features():
    rng = np.random.default_rng(6)
    family = make_task_family(40, 3, 1, rng)
    oracle = rng.standard_normal((64, 3)) @ family.M.T
    complement = np.linalg.svd(np.eye(40) - family.M @ family.M.T)[0][:, :37]
    blind = rng.standard_normal((64, 37)) @ complement.T
    good = probe_accuracy(oracle, None, family, 60, np.random.default_rng(7), n_test=1000, new_tasks=3)
    bad = probe_accuracy(blind, None, family, 60, np.random.default_rng(7), n_test=1000, new_tasks=3)
    assert good > 0.85
    assert 0.35 < bad < 0.65  # features blind to span(M) are at chance
    with pytest.raises(ValueError, match="n_new"):
        probe_accuracy(oracle, None, family, 1, rng)
