"""How well a first layer ``W`` captured the ground-truth subspace, and what its features are worth."""

import numpy as np
import scipy.linalg


def spearman(x, y):
    """Spearman's rank correlation of ``x`` and ``y`` (``scipy.stats.spearmanr``). SciPy's statistics
    load at the first call: importing them took about a second of every command's start-up, on the
    way to a first run's compilation."""
    from scipy.stats import spearmanr

    return float(spearmanr(x, y)[0])


def _check(W, M):
    W = np.asarray(W, dtype=np.float64)
    M = np.asarray(M, dtype=np.float64)
    if W.ndim != 2 or M.ndim != 2 or W.shape[1] != M.shape[0]:
        raise ValueError(f"W must be (m, d) and M (d, r) with the same d; got W {W.shape}, M {M.shape}")
    if W.shape[0] < M.shape[1]:
        raise ValueError(f"W needs at least r = {M.shape[1]} rows to span the subspace; got {W.shape[0]}")
    return W, M


def subspace_distance(W, M):
    """Sine of the largest principal angle between ``span(M)`` and the top-``r`` right singular
    vectors of ``W``: 0 when they coincide, 1 when some direction of ``M`` is missed entirely.

    Parameters
    ----------
    W : ndarray, shape (m, d), with m >= r
    M : ndarray, shape (d, r), orthonormal columns

    Returns
    -------
    float in [0, 1]
    """
    W, M = _check(W, M)
    r = M.shape[1]
    _, _, Vt = np.linalg.svd(W, full_matrices=False)
    angles = scipy.linalg.subspace_angles(M, Vt[:r].T)
    return float(np.clip(np.sin(angles.max()), 0.0, 1.0))


def energy_outside(W, M):
    """Fraction of ``||W||_F^2`` outside ``span(M)``: ``||W (I - M M^T)||_F^2 / ||W||_F^2``."""
    W, M = _check(W, M)
    total = float(np.sum(W * W))
    if total == 0.0:
        raise ValueError("W is zero: its energy outside the subspace is undefined")
    inside = float(np.sum((W @ M) ** 2))
    return float(np.clip((total - inside) / total, 0.0, 1.0))


def relu_features(X, W, b=None):
    """``relu(X W^T + b)`` with each row of ``W`` (and its bias) scaled to unit norm.

    The scaling makes features independent of the overall size of ``W``, which training changes.
    """
    norms = np.linalg.norm(W, axis=1)
    norms[norms == 0] = 1.0
    Z = X @ (W / norms[:, None]).T
    if b is not None:
        Z += b / norms
    return np.maximum(Z, 0.0)


class RidgeProbe:
    """Linear probe with intercept, its ridge penalty chosen by exact leave-one-out error.

    Parameters
    ----------
    penalties : sequence of float
        Candidate penalties, relative to the mean squared norm of the centred features.
    """

    def __init__(self, penalties=(1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)):
        self.penalties = tuple(penalties)

    def fit(self, features, y):
        """Fit on ``features (n, p)`` and targets ``y (n,)``; returns self."""
        Phi = np.asarray(features, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        n = Phi.shape[0]
        self.mean_ = Phi.mean(axis=0)
        self.offset_ = y.mean()
        Phi_c = Phi - self.mean_
        y_c = y - self.offset_
        # Dual form: n is small (tens to hundreds of samples), p is the width.
        evals, U = np.linalg.eigh(Phi_c @ Phi_c.T)
        evals = np.maximum(evals, 0.0)
        Uy = U.T @ y_c
        scale = max(evals.sum() / n, 1e-12)
        best = None
        for relative in self.penalties:
            lam = relative * scale
            shrink = evals / (evals + lam)
            fitted = U @ (shrink * Uy)
            leverage = (U**2) @ shrink + 1.0 / n  # + 1/n: the intercept's leverage
            loo_residual = (y_c - fitted) / np.maximum(1.0 - leverage, 1e-12)
            error = float(np.mean(loo_residual**2))
            if best is None or error < best[0]:
                best = (error, lam)
        self.penalty_ = best[1]
        dual = U @ (Uy / (evals + self.penalty_))
        self.coef_ = Phi_c.T @ dual
        return self

    def decision_function(self, features):
        return (np.asarray(features, dtype=np.float64) - self.mean_) @ self.coef_ + self.offset_

    def predict(self, features):
        """Labels in {-1, +1}."""
        return np.where(self.decision_function(features) >= 0, 1.0, -1.0)


def probe_accuracy(W, b, family, n_new, rng, n_test=2000, new_tasks=5):
    """Downstream accuracy of a ridge probe on ``relu(W x + b)`` for fresh tasks.

    Draws ``new_tasks`` tasks on ``family``'s ground truth that were never trained on, fits a
    probe on ``n_new`` samples of each, and scores it on ``n_test`` fresh samples.

    The features and labels see ``x`` only through ``W x`` and ``M^T x``: a layer and a family in
    joint coordinates (``reduction.joint_coordinates``, ``TaskFamily.in_coordinates``) give an
    accuracy of the same distribution at a fraction of the cost.

    Returns
    -------
    float
        Mean test accuracy over the new tasks.
    """
    if n_new < 2:
        raise ValueError(f"n_new must be at least 2; got {n_new}")
    W = np.asarray(W, dtype=np.float64)
    b = None if b is None else np.asarray(b, dtype=np.float64)
    tasks = family.new_tasks(new_tasks, rng)
    accuracies = []
    for t in range(new_tasks):
        task = tasks.with_tasks(tasks.V[t : t + 1])
        X_train, Y_train = task.sample(n_new, rng, layout="shared", dtype=np.float64)
        X_test, Y_test = task.sample(n_test, rng, layout="shared", dtype=np.float64)
        probe = RidgeProbe().fit(relu_features(X_train, W, b), Y_train[0])
        accuracies.append(float(np.mean(probe.predict(relu_features(X_test, W, b)) == Y_test[0])))
    return float(np.mean(accuracies))
