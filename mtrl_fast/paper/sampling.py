"""The experiment's samples: Gaussian inputs and their labels, drawn by the compiled sampler
(``mtrl_fast._kernels._sampler``) under a :class:`~mtrl_fast.paper.keys.DrawKey` and each task's index.

A task's samples do not depend on which tasks are drawn with it, on the thread count or on the
machine, and its rows can be drawn in slices, each the same as in one draw.
"""

import numpy as np

from .._kernels import derive_task_keys, draw_per_task, draw_shared
from .keys import DrawKey


def task_keys(key, first, count):
    """``(keys (count, 2), shared (2,))``: Philox keys of tasks ``first .. first + count - 1`` and of
    the shared layout's inputs, from ``key``, a :class:`~mtrl_fast.paper.keys.DrawKey` or its four words
    ``(seed0, seed1, round, phase)``."""
    words = DrawKey.of(key).words()
    if first < 0 or first + count > 2**32:
        raise ValueError(f"tasks {first} .. {first + count - 1} are outside [0, 2**32)")
    return derive_task_keys(*(np.uint64(w) for w in words), np.uint64(first), count)


def draw(M, V, B, noise, first, count, n, key, shared, dtype, out=None, row0=0):
    """Inputs and labels of tasks ``first .. first + count - 1`` (``V`` holds their rows): their
    rows ``row0 .. row0 + n - 1``.

    Parameters
    ----------
    M : ndarray, shape (d, r)
    V : ndarray, shape (count, r) or (count, k)
        The tasks' vectors (linear) or teacher output weights.
    B : ndarray, shape (k, r), or None
        The ReLU teacher's hidden layer (``None``: linear labels).
    noise : float
        Label-flip probability.
    n : int
        Samples per task.
    key : DrawKey or sequence of 4 ints
        ``(seed0, seed1, round, phase)`` (:class:`mtrl_fast.paper.keys.DrawKey`).
    shared : bool
        One ``X (n, d)`` labelled by every task, else ``X (count, n, d)``.
    dtype : float32 or float64
    out : (ndarray, ndarray), optional
        ``(X, Y)`` to write into, of the shapes and dtype returned (a reused buffer: no fresh
        pages to fault in).
    row0 : int, default 0
        First row drawn: a task's rows can be drawn in slices, each the same as in one draw.

    Returns
    -------
    X, Y : ndarray
        ``Y (count, n)`` in ``dtype``, -1/+1.
    """
    dtype = np.dtype(dtype)
    if not 0 <= row0 <= 2**63 - n:
        raise ValueError(f"row0 must be a non-negative integer; got {row0}")
    d = M.shape[0]
    keys, shared_key = task_keys(key, first, count)
    Mp = np.zeros((4 * ((d + 3) // 4), M.shape[1]))  # M, with zero rows up to whole Philox blocks
    Mp[:d] = M
    V = np.ascontiguousarray(V, dtype=np.float64)
    B = np.zeros((0, M.shape[1])) if B is None else np.ascontiguousarray(B, dtype=np.float64)
    x_shape = (n, d) if shared else (count, n, d)
    if out is None:
        X, Y = np.empty(x_shape, dtype=dtype), np.empty((count, n), dtype=dtype)
    else:
        X, Y = out
        if (
            X.shape != x_shape
            or Y.shape != (count, n)
            or X.dtype != dtype
            or Y.dtype != dtype
            or not (X.flags.c_contiguous and Y.flags.c_contiguous)
        ):
            raise ValueError(f"out must be C-contiguous {dtype} arrays of shapes {x_shape} and {(count, n)}")
    if shared:
        draw_shared(shared_key, keys, int(row0), X, Y, Mp, V, B, float(noise))
    else:
        draw_per_task(keys, int(row0), X, Y, Mp, V, B, float(noise))
    return X, Y


def normals(key, rows, columns, dtype=np.float64):
    """A ``(rows, columns)`` matrix of independent standard normals: the inputs the shared layout
    draws under ``key`` (a :class:`~mtrl_fast.paper.keys.DrawKey` or its four words), with no task to
    label them."""
    X, _ = draw(np.zeros((columns, 0)), np.zeros((0, 0)), None, 0.0, 0, 0, rows, key, True, dtype)
    return X
