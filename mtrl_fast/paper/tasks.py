"""Synthetic multi-task data whose labels depend only on a projection ``M^T x``.

A :class:`TaskFamily` holds the ground-truth subspace ``M (d, r)`` and one labelling rule per
task; :meth:`TaskFamily.sample` draws Gaussian inputs and their labels, in the shared layout
(``X (n, d)`` labelled by every task) or the per-task one (``X (T, n, d)``). Every draw takes a
``numpy.random.Generator``, so a seed fixes it.
"""

from dataclasses import dataclass

import numpy as np

from .._kernels import RELU_MEAN
from ..losses import LAYOUTS, PER_TASK
from .sampling import draw

LABEL_KINDS = ("linear", "relu-teacher")


def orthonormal_basis(d, r, rng):
    """A uniformly random ``(d, r)`` matrix with orthonormal columns."""
    if not 1 <= r <= d:
        raise ValueError(f"r must be between 1 and d = {d}; got {r}")
    Q, R = np.linalg.qr(rng.standard_normal((d, r)))
    return Q * np.sign(np.diag(R))  # sign fix makes the draw uniform (Haar)


def unit_vectors(count, r, rng):
    """``count`` vectors drawn uniformly from the unit sphere in ``R^r``."""
    V = rng.standard_normal((count, r))
    return V / np.linalg.norm(V, axis=1, keepdims=True)


@dataclass(frozen=True)
class TaskFamily:
    """Ground truth ``M`` and the labelling rule of each task.

    Attributes
    ----------
    M : ndarray, shape (d, r)
        Orthonormal basis of the subspace every label depends on.
    V : ndarray, shape (T, r)
        Task vectors, unit norm (``linear``) or the teacher's output weights (``relu-teacher``).
    kind : {"linear", "relu-teacher"}
        ``linear``: ``y = sign(<v_t, M^T x>)``. ``relu-teacher``: ``y = sign(v_t . (relu(B M^T x)
        - E relu))``, one hidden layer ``B (k, r)`` of unit rows shared by the tasks.
    B : ndarray, shape (k, r), or None
        The teacher's hidden layer (``relu-teacher`` only).
    noise : float
        Probability that a label is flipped.
    """

    M: np.ndarray
    V: np.ndarray
    kind: str = "linear"
    B: np.ndarray | None = None
    noise: float = 0.0

    @property
    def d(self):
        return self.M.shape[0]

    @property
    def r(self):
        return self.M.shape[1]

    @property
    def T(self):
        return self.V.shape[0]

    def labels(self, X):
        """Noise-free labels ``(T, n)`` in {-1, +1} of shared inputs ``X (n, d)``, or of per-task
        inputs ``X (T, n, d)`` where task ``t`` labels ``X[t]``."""
        Z = X @ self.M  # (..., r): the only thing labels may depend on
        if self.kind == "relu-teacher":
            Z = np.maximum(Z @ self.B.T, 0.0) - RELU_MEAN
        scores = np.einsum("tnk,tk->tn", Z, self.V) if X.ndim == 3 else self.V @ Z.T
        return np.where(scores >= 0, 1.0, -1.0)  # sign(0) = +1

    def sample(self, n, rng, layout=PER_TASK, dtype=np.float32):
        """Draw ``n`` fresh samples per task with labels (flipped with probability ``noise``).

        Returns
        -------
        X : ndarray, shape (T, n, d) for ``per-task``, (n, d) for ``shared``
        Y : ndarray, shape (T, n), labels -1/+1
        """
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}; got {layout!r}")
        shape = (self.T, n, self.d) if layout == PER_TASK else (n, self.d)
        X = rng.standard_normal(shape, dtype=np.float64)
        Y = self.labels(X)
        if self.noise > 0:
            Y = np.where(rng.random(Y.shape) < self.noise, -Y, Y)
        return X.astype(dtype), Y.astype(dtype)

    def sample_tasks(self, first, count, n, key, layout=PER_TASK, dtype=np.float32, out=None, row0=0):
        """Fresh samples of the tasks from ``first`` to ``first + count - 1``, drawn by compiled parallel kernels.

        Every input is a normal from a counter-based generator (Philox4x32-10) keyed by ``key``
        and the task, at the counter of its row and column, and the labels are computed in the
        same pass (:mod:`mtrl_fast.paper.sampling`): a task's data are the same whichever tasks
        are drawn with it, on any thread count or machine, so a batch can be drawn in shards,
        where it is used. ``key`` is a :class:`~mtrl_fast.paper.keys.DrawKey` or its four words
        ``(seed0, seed1, round, phase)``, integers in ``[0, 2**32)``. ``out``, ``(X, Y)`` of the
        returned shapes, is written into and returned. The rows drawn are ``row0 .. row0 + n - 1`` of
        each task: a task can be drawn in slices.

        Returns
        -------
        X : ndarray, shape (count, n, d) for ``per-task``, (n, d) for ``shared``
        Y : ndarray, shape (count, n), labels -1/+1
        """
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}; got {layout!r}")
        return draw(
            self.M,
            self.V[first : first + count],
            self.B,
            self.noise,
            first,
            count,
            n,
            key,
            layout != PER_TASK,
            dtype,
            out,
            row0,
        )

    def in_coordinates(self, M):
        """The same tasks on coordinates ``c ~ N(0, I_k)`` in which the projection is ``M^T c``:
        ``M (k, r)`` with orthonormal columns, such as ``Q^T M`` for an orthonormal basis ``Q`` whose
        span holds ``span(M)`` (see ``mtrl_fast.paper.reduction``). Its labels of ``c`` have the
        law of this family's labels of ``x ~ N(0, I_d)``."""
        M = np.asarray(M, dtype=np.float64)
        if M.ndim != 2 or M.shape[1] != self.r:
            raise ValueError(f"M must be (k, r) with r = {self.r}; got shape {M.shape}")
        if not np.allclose(M.T @ M, np.eye(self.r), atol=1e-8):
            raise ValueError("M must have orthonormal columns: the coordinates must carry all of span(M)")
        return TaskFamily(M=M, V=self.V, kind=self.kind, B=self.B, noise=self.noise)

    def with_tasks(self, V):
        """The same ground truth with other task vectors ``V (T', ...)``: new tasks, same ``M``."""
        return TaskFamily(M=self.M, V=np.asarray(V, dtype=float), kind=self.kind, B=self.B, noise=self.noise)

    def new_tasks(self, count, rng):
        """``count`` fresh tasks of the same kind on the same ground truth."""
        return self.with_tasks(_task_vectors(self.kind, count, self.r, self.B, rng))


def _task_vectors(kind, T, r, B, rng):
    if kind == "linear":
        return unit_vectors(T, r, rng)
    return rng.standard_normal((T, B.shape[0]))


def make_task_family(d, r, T, rng, kind="linear", noise=0.0, teacher_width=None):
    """Draw a ground truth ``M (d, r)`` and ``T`` tasks on it.

    Parameters
    ----------
    d, r, T : int
        Input dimension, subspace dimension (``1 <= r <= d``) and number of tasks (``>= 1``).
    rng : numpy.random.Generator
    kind : {"linear", "relu-teacher"}, default "linear"
    noise : float, default 0
        Label-flip probability, in ``[0, 0.5)``.
    teacher_width : int, optional
        Hidden width of the ``relu-teacher`` (default ``2 r``).
    """
    if kind not in LABEL_KINDS:
        raise ValueError(f"kind must be one of {LABEL_KINDS}; got {kind!r}")
    if not 0.0 <= noise < 0.5:
        raise ValueError(f"noise must be in [0, 0.5); got {noise}")
    if T < 1:
        raise ValueError(f"T must be at least 1; got {T}")
    M = orthonormal_basis(d, r, rng)
    B = unit_vectors(teacher_width or 2 * r, r, rng) if kind == "relu-teacher" else None
    return TaskFamily(M=M, V=_task_vectors(kind, T, r, B, rng), kind=kind, B=B, noise=noise)
