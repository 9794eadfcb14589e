"""The paper's mechanism, measured: how well a layer's features align with cross-task label agreement.

After a head step from zero, each head is ``a_t ~ (head_lr / n) sum_i y_ti relu(W x_ti + b)``, so the
first layer's step weighs pairs of points by ``sum_t y_t(x) y_t(x')``: how often they share a label
across tasks. Multi-task pretraining therefore favours features under which points that usually
share a label are alike (the paper's pseudo-contrastive loss). These functions measure it on
held-out points: the label-agreement kernel ``E_t[y_t(x) y_t(x')]``, the features' kernel, and the
alignment of the two.
"""

import numpy as np

from .metrics import spearman


def label_agreement_kernel(family, X, tasks=1000, rng=None):
    """``K[i, j] = E_t[y_t(x_i) y_t(x_j)]`` over the tasks of ``family``'s kind, without label noise.

    For linear-sign labels with task vectors uniform on the sphere it is exact:
    ``K[i, j] = 1 - 2 theta_ij / pi``, with ``theta_ij`` the angle between ``M^T x_i`` and
    ``M^T x_j`` (the order-0 arc-cosine kernel). For the ReLU teacher it is a Monte-Carlo mean over
    ``tasks`` fresh tasks drawn from ``rng``.

    Parameters
    ----------
    family : mtrl_fast.paper.tasks.TaskFamily
    X : ndarray, shape (N, d)
        The points.
    tasks : int, default 1000
        Fresh tasks of the Monte-Carlo estimate (ReLU teacher only).
    rng : numpy.random.Generator, optional
        Draws them (ReLU teacher only; required there).

    Returns
    -------
    ndarray, shape (N, N)
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != family.d:
        raise ValueError(f"X must be (N, d) with d = {family.d}; got shape {X.shape}")
    if family.kind == "linear":
        P = X @ family.M
        norms = np.linalg.norm(P, axis=1)
        norms[norms == 0] = 1.0
        cosines = np.clip((P / norms[:, None]) @ (P / norms[:, None]).T, -1.0, 1.0)
        return 1.0 - 2.0 * np.arccos(cosines) / np.pi
    if rng is None or tasks < 1:
        raise ValueError("the ReLU teacher's kernel is a Monte-Carlo mean: pass rng and tasks >= 1")
    Y = family.new_tasks(tasks, rng).labels(X)  # (tasks, N), noise-free
    return (Y.T @ Y) / tasks


def feature_kernel(W, b, X):
    """Centred cosine similarity of the features ``relu(W x + b)`` (rows of ``W`` at unit norm, as
    the probe sees them): each feature is centred over the points, then ``K[i, j]`` is the cosine
    of the angle between points ``i`` and ``j``'s centred feature vectors."""
    from .metrics import relu_features

    features = relu_features(np.asarray(X, dtype=np.float64), np.asarray(W, dtype=np.float64), b)
    features -= features.mean(axis=0)
    norms = np.linalg.norm(features, axis=1)
    norms[norms == 0] = 1.0
    features /= norms[:, None]
    return features @ features.T


def _centred(K):
    K = np.asarray(K, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"a kernel must be a square matrix; got shape {K.shape}")
    return K - K.mean(axis=0) - K.mean(axis=1)[:, None] + K.mean()


def kernel_alignment(K1, K2):
    """Centred kernel alignment, ``<H K1 H, H K2 H>_F / (|H K1 H|_F |H K2 H|_F)`` with
    ``H = I - 11^T / N``: 1 for proportional kernels, invariant to scaling either, and 0 for
    kernels with nothing in common beyond a constant."""
    A, B = _centred(K1), _centred(K2)
    if A.shape != B.shape:
        raise ValueError(f"kernels of different sizes: {A.shape} and {B.shape}")
    norm = np.linalg.norm(A) * np.linalg.norm(B)
    if norm == 0:
        raise ValueError("a kernel is constant: its alignment is undefined")
    return float(np.sum(A * B) / norm)


def kernel_spearman(K1, K2):
    """Spearman correlation of the two kernels' off-diagonal entries (each pair once)."""
    K1, K2 = np.asarray(K1), np.asarray(K2)
    upper = np.triu_indices(K1.shape[0], k=1)
    return spearman(K1[upper], K2[upper])
