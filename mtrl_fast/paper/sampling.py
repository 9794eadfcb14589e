"""The experiment's samples, drawn by compiled parallel kernels: Gaussian inputs and their labels
in one pass.

Every input ``x_(t, i, j)`` is a Box-Muller normal from Philox4x32-10 (``mtrl_fast._kernels._random``)
under a key derived from ``(cell seed, round, phase, task)``, at the counter ``(column block, row)``:
a task's samples do not depend on which tasks are drawn with it, on the thread count or on the
machine. The labels are computed as each row is written, from the row's stored values: the
projection ``M^T x`` (summed in a fixed order, so that it too is the same everywhere), the task's
rule (linear sign, or a ReLU teacher), and the label flip, from the same key at another counter.
Rows are drawn in parallel over ``(task, block of rows)``; each writes only its own rows.
"""

from typing import Any

import numba
import numpy as np

from .._kernels._jit import LazyKernel, signatures
from .._kernels._math import fma
from .._kernels._random import (
    derive_key,
    minus_two_log_uniform,
    minus_two_log_uniform32,
    philox,
    unit_circle,
    unit_circle32,
)

#: E[relu(g)] for g ~ N(0, 1): centres a unit-norm ReLU teacher neuron on Gaussian inputs (the
#: compiled labels and ``tasks.TaskFamily.labels`` subtract the same constant).
RELU_MEAN = 1.0 / np.sqrt(2.0 * np.pi)

#: Rows one parallel work item draws, side by side in the vector lanes.
ROW_BLOCK = 16
#: The counter's third word: which stream of a task's key.
INPUTS, FLIPS = 0, 1

_OPTIONS: dict[str, Any] = dict(error_model="numpy", cache=True, nogil=True)  # no fastmath: the same bits everywhere


@numba.njit(**_OPTIONS)
def _draw_rows(k0, k1, row0, rows, Xt):
    """The normals of rows ``row0 .. row0 + rows - 1``, transposed: ``Xt[j, i]`` is column ``j`` of
    row ``row0 + i``. The rows run innermost, so that the loop vectorises with one row per lane."""
    zero = np.uint64(0)
    stream = np.uint64(INPUTS)
    if Xt.itemsize == 4:  # four float32 normals per Philox block, from 32-bit uniforms
        for block in range(Xt.shape[0] // 4):
            c0 = np.uint64(block)
            j = 4 * block
            for i in range(rows):
                w0, w1, w2, w3 = philox(c0, np.uint64(row0 + i), stream, zero, k0, k1)
                radius = np.sqrt(minus_two_log_uniform32(w0))
                c, s = unit_circle32(w1)
                Xt[j, i] = radius * c
                Xt[j + 1, i] = radius * s
                radius = np.sqrt(minus_two_log_uniform32(w2))
                c, s = unit_circle32(w3)
                Xt[j + 2, i] = radius * c
                Xt[j + 3, i] = radius * s
    else:  # two float64 normals per block, from a 52-bit uniform for the radius
        for block in range(Xt.shape[0] // 2):
            c0 = np.uint64(block)
            j = 2 * block
            for i in range(rows):
                w0, w1, w2, _ = philox(c0, np.uint64(row0 + i), stream, zero, k0, k1)
                radius = np.sqrt(minus_two_log_uniform((w0 << np.uint64(20)) | (w1 >> np.uint64(12)), 52))
                c, s = unit_circle(w2)
                Xt[j, i] = radius * c
                Xt[j + 1, i] = radius * s


@numba.njit(**_OPTIONS)
def _project(Xt, rows, Mp, P):
    """``P[k, i] = sum_j Xt[j, i] Mp[j, k]`` in float64, added in column order, one rounding per
    term. The rows are the vector lanes, so no sum is ever split across lanes and every machine
    adds in the same order; four columns per pass keep ``P`` in registers. ``Mp`` has zero rows
    past ``d`` (a row's last, partial Philox block), which add nothing."""
    P[:, :rows] = 0.0
    for j in range(0, Xt.shape[0], 4):
        for k in range(P.shape[0]):
            m0, m1, m2, m3 = Mp[j, k], Mp[j + 1, k], Mp[j + 2, k], Mp[j + 3, k]
            for i in range(rows):
                total = fma(np.float64(Xt[j, i]), m0, P[k, i])
                total = fma(np.float64(Xt[j + 1, i]), m1, total)
                total = fma(np.float64(Xt[j + 2, i]), m2, total)
                P[k, i] = fma(np.float64(Xt[j + 3, i]), m3, total)


@numba.njit(**_OPTIONS)
def _label(proj, v, B, noise, k0, k1, row):
    """The task's label of a row with projection ``proj``: ``sign(v . proj)`` (``B`` empty) or
    ``sign(v . (relu(B proj) - E relu))``, sign(0) = +1, flipped with probability ``noise``."""
    score = 0.0
    if B.shape[0] == 0:
        for k in range(proj.shape[0]):
            score += v[k] * proj[k]
    else:
        for h in range(B.shape[0]):
            hidden = 0.0
            for k in range(proj.shape[0]):
                hidden += B[h, k] * proj[k]
            score += v[h] * (max(hidden, 0.0) - RELU_MEAN)
    label = 1.0 if score >= 0.0 else -1.0
    if noise > 0.0:
        w0, _, _, _ = philox(np.uint64(0), np.uint64(row), np.uint64(FLIPS), np.uint64(0), k0, k1)
        if (np.float64(w0) + 0.5) * (1.0 / 4294967296.0) < noise:
            label = -label
    return label


@numba.njit(**_OPTIONS)
def _store_rows(Xt, rows, X):
    """``X[i, j] = Xt[j, i]`` for the block's rows (``X`` is the block's slice of the output)."""
    for i in range(rows):
        for j in range(X.shape[1]):
            X[i, j] = Xt[j, i]


def _per_task(keys, row0, X, Y, Mp, V, B, noise):
    count, n, d = X.shape
    blocks = (n + ROW_BLOCK - 1) // ROW_BLOCK
    for item in numba.prange(count * blocks):
        t = item // blocks
        first = (item % blocks) * ROW_BLOCK
        rows = min(ROW_BLOCK, n - first)
        k0, k1 = keys[t, 0], keys[t, 1]
        Xt = np.empty((4 * ((d + 3) // 4), ROW_BLOCK), dtype=X.dtype)
        P = np.empty((Mp.shape[1], ROW_BLOCK))
        _draw_rows(k0, k1, row0 + first, rows, Xt)
        _project(Xt, rows, Mp, P)
        for i in range(rows):
            Y[t, first + i] = _label(P[:, i], V[t], B, noise, k0, k1, row0 + first + i)
        _store_rows(Xt, rows, X[t, first : first + rows])


def _shared(key, keys, row0, X, Y, Mp, V, B, noise):
    n, d = X.shape
    blocks = (n + ROW_BLOCK - 1) // ROW_BLOCK
    for item in numba.prange(blocks):
        first = item * ROW_BLOCK
        rows = min(ROW_BLOCK, n - first)
        Xt = np.empty((4 * ((d + 3) // 4), ROW_BLOCK), dtype=X.dtype)
        P = np.empty((Mp.shape[1], ROW_BLOCK))
        _draw_rows(key[0], key[1], row0 + first, rows, Xt)
        _project(Xt, rows, Mp, P)
        for i in range(rows):
            for t in range(Y.shape[0]):
                Y[t, first + i] = _label(P[:, i], V[t], B, noise, keys[t, 0], keys[t, 1], row0 + first + i)
        _store_rows(Xt, rows, X[first : first + rows])


_PARALLEL: dict[str, Any] = dict(_OPTIONS, parallel=True)
_per_task_kernel = LazyKernel(
    _per_task,
    signatures(
        "(uint64[:, ::1], int64, {f}[:, :, ::1], {f}[:, ::1], float64[:, ::1], float64[:, ::1], float64[:, ::1], "
        "float64)"
    ),
    _PARALLEL,
)
_shared_kernel = LazyKernel(
    _shared,
    signatures(
        "(uint64[::1], uint64[:, ::1], int64, {f}[:, ::1], {f}[:, ::1], float64[:, ::1], float64[:, ::1], "
        "float64[:, ::1], float64)"
    ),
    _PARALLEL,
)


@numba.njit(**_OPTIONS)
def _derive_keys(seed0, seed1, round_index, phase, first, count):
    """Each task's key from the cell's seed, the round, the phase and the task; and the shared
    layout's one input key (counter word 3 = 1)."""
    keys = np.empty((count, 2), dtype=np.uint64)
    for t in range(count):
        keys[t, 0], keys[t, 1] = derive_key(seed0, seed1, round_index, phase, np.uint64(first + t), np.uint64(0))
    shared = np.empty(2, dtype=np.uint64)
    shared[0], shared[1] = derive_key(seed0, seed1, round_index, phase, np.uint64(0), np.uint64(1))
    return keys, shared


def task_keys(key, first, count):
    """``(keys (count, 2), shared (2,))``: Philox keys of tasks ``first .. first + count - 1`` and of
    the shared layout's inputs, from ``key = (seed0, seed1, round, phase)`` (32-bit words)."""
    words = [int(k) for k in key]
    if len(words) != 4 or any(not 0 <= w < 2**32 for w in words):
        raise ValueError(f"key must be four integers in [0, 2**32): (seed0, seed1, round, phase); got {key!r}")
    if first < 0 or first + count > 2**32:
        raise ValueError(f"tasks {first} .. {first + count - 1} are outside [0, 2**32)")
    return _derive_keys(*(np.uint64(w) for w in words), np.uint64(first), count)


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
    key : sequence of 4 ints
        ``(seed0, seed1, round, phase)``.
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
        _shared_kernel(shared_key, keys, int(row0), X, Y, Mp, V, B, float(noise))
    else:
        _per_task_kernel(keys, int(row0), X, Y, Mp, V, B, float(noise))
    return X, Y


def normals(key, rows, columns, dtype=np.float64):
    """A ``(rows, columns)`` matrix of independent standard normals: the inputs the shared layout
    draws under ``key = (seed0, seed1, round, phase)``, with no task to label them."""
    X, _ = draw(np.zeros((columns, 0)), np.zeros((0, 0)), None, 0.0, 0, 0, rows, key, True, dtype)
    return X
