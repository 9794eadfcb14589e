"""Plain NumPy versions of ``forward``, ``backward`` and ``loss_and_grad``: the tests' ground truth.

Written to be obviously right, not fast: every task is handled on its own, in a loop, exactly
as the formulas read, and the shared layout is treated as the per-task one with the same inputs
for every task. Depends on NumPy alone (the kernels never run here).
"""

import numpy as np

from . import losses
from ._validate import Problem, check_problem, check_requests
from .gradients import Gradients
from .losses import SHARED


def _task_inputs(p: Problem, t: int) -> np.ndarray:
    return p.X if p.layout == SHARED else p.X[t]


def _relu_slope(Z: np.ndarray) -> np.ndarray:
    """The ReLU's derivative, 1 where ``Z > 0`` and 0 elsewhere, but NaN where ``Z`` is NaN: a NaN
    reaches every gradient it touches, as through any other function."""
    return np.where(np.isnan(Z), Z, Z > 0).astype(Z.dtype)


def _pre_activations(p: Problem, t: int) -> np.ndarray:
    Z = _task_inputs(p, t) @ p.W.T
    if p.b is not None:
        Z = Z + p.b
    return Z


def forward(
    X: np.ndarray, W: np.ndarray, b: np.ndarray | None, A: np.ndarray, *, check_finite: bool = True
) -> np.ndarray:
    """Same contract as ``mtrl_fast.forward``."""
    p = check_problem(X, W, b, A, check_finite=check_finite)
    F = np.empty((p.T, p.n), dtype=p.X.dtype)
    for t in range(p.T):
        H = np.maximum(_pre_activations(p, t), 0)
        F[t] = H @ p.A[t]
    return F


def backward(
    X: np.ndarray,
    W: np.ndarray,
    b: np.ndarray | None,
    A: np.ndarray,
    dF: np.ndarray,
    *,
    check_finite: bool = True,
    gram: bool = False,
) -> Gradients:
    """Same contract as ``mtrl_fast.backward``."""
    p = check_problem(X, W, b, A, dF, check_finite=check_finite, y_name="dF")
    gW = np.zeros_like(p.W)
    gb = np.zeros(p.m, dtype=p.X.dtype)
    gA = np.zeros_like(p.A)
    shared_terms: list[np.ndarray] | None = (
        [] if p.layout == SHARED else None
    )  # the shared layout's D is the sum of the tasks' D
    DtD = np.zeros((p.m, p.m))
    for t in range(p.T):
        Z = _pre_activations(p, t)
        H = np.maximum(Z, 0)
        gA[t] = p.Y[t] @ H
        D = np.outer(p.Y[t], p.A[t]) * _relu_slope(Z)
        gW += D.T @ _task_inputs(p, t)
        gb += D.sum(axis=0)
        D64 = D.astype(np.float64)
        if shared_terms is None:
            DtD += D64.T @ D64
        else:
            shared_terms.append(D64)
    if shared_terms is not None:
        D_shared = np.sum(shared_terms, axis=0)
        DtD = D_shared.T @ D_shared
    return Gradients(W=gW, b=gb if p.b is not None else None, A=gA, gram=DtD if gram else None)


def loss_and_grad(
    X: np.ndarray,
    Y: np.ndarray,
    W: np.ndarray,
    b: np.ndarray | None,
    A: np.ndarray,
    loss: str = "logistic",
    *,
    check_finite: bool = True,
    first_layer: bool = True,
    gram: bool = False,
) -> tuple[float, Gradients]:
    """Same contract as ``mtrl_fast.loss_and_grad``: ``forward``, the mean loss, ``backward``."""
    check_requests(first_layer, gram)
    p = check_problem(X, W, b, A, Y, loss=loss, check_finite=check_finite)
    F = forward(p.X, p.W, p.b, p.A, check_finite=False).astype(np.float64)
    scale = 1.0 / (p.T * p.n)
    value = losses.value(loss, F, p.Y).sum() * scale
    dF = (losses.slope(loss, F, p.Y) * scale).astype(p.X.dtype)
    grads = backward(p.X, p.W, p.b, p.A, dF, check_finite=False, gram=gram)
    return value, grads if first_layer else Gradients(W=None, b=None, A=grads.A)
