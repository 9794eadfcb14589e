"""The best plain NumPy a careful user writes: the task sum collapsed, stacked products."""

import numpy as np
from threadpoolctl import threadpool_limits

from mtrl_fast import losses
from mtrl_fast.gradients import Gradients

from . import Peer, PreparedStep, round_step


def loss_and_grad(X, Y, W, b, A, loss, check_finite=False, first_layer=True):
    """The objective and gradients, vectorised over tasks; same contract as ``mtrl_fast.loss_and_grad``
    (without the checks)."""
    T, m = A.shape
    n = Y.shape[1]
    scale = X.dtype.type(1.0 / (T * n))
    if X.ndim == 2:  # shared: Z (n, m)
        Z = X @ W.T
        if b is not None:
            Z += b
        H = np.maximum(Z, 0)
        F = A @ H.T
        value = float(losses.value(loss, F, Y).sum(dtype=np.float64)) * float(scale)
        R = losses.slope(loss, F, Y).astype(X.dtype) * scale
        gA = R @ H
        if not first_layer:
            return value, Gradients(W=None, b=None, A=gA)
        D = R.T @ A
        D *= H > 0
        gW = D.T @ X
    else:  # per-task: stacked (T n, d) rows, Z (T, n, m)
        X_rows = X.reshape(T * n, -1)
        Z = (X_rows @ W.T).reshape(T, n, m)
        if b is not None:
            Z += b
        H = np.maximum(Z, 0)
        F = np.matmul(H, A[:, :, None])[..., 0]
        value = float(losses.value(loss, F, Y).sum(dtype=np.float64)) * float(scale)
        R = losses.slope(loss, F, Y).astype(X.dtype) * scale
        gA = np.matmul(R[:, None, :], H)[:, 0, :]
        if not first_layer:
            return value, Gradients(W=None, b=None, A=gA)
        D = R[:, :, None] * A[:, None, :]
        D *= H > 0
        D = D.reshape(T * n, m)
        gW = D.T @ X_rows
    gb = D.sum(axis=0) if b is not None else None
    return value, Gradients(W=gW, b=gb, A=gA)


class NumPy(Peer):
    """:func:`loss_and_grad` above, on NumPy's BLAS."""

    name = "numpy"

    def version(self):
        return np.__version__

    def set_threads(self, k):
        threadpool_limits(limits=k, user_api="blas")  # process-wide until changed

    def prepare(self, X, Y, W, b, A, loss):
        last = {}

        def run():
            last["out"] = loss_and_grad(X, Y, W, b, A, loss)
            return last["out"]

        return PreparedStep(run, lambda: last["out"] if "out" in last else run())

    def prepare_round(self, X, Y, W, b, A, loss):
        return round_step(loss_and_grad, X, Y, W, b, A, loss)
