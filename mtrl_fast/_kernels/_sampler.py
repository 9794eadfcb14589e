"""The paper's sampler as compiled kernels: Gaussian inputs and their labels in one pass.

Every input ``x_(t, i, j)`` is a Box-Muller normal from Philox4x32-10 (:mod:`._random`) under a
task's key, at the counter ``(column block, row)``: a task's samples do not depend on which tasks
are drawn with it, on the thread count or on the machine. The labels are computed as each row is
written, from the row's stored values: the projection ``M^T x`` (summed in a fixed order, so that it
too is the same everywhere), the task's rule (linear sign, or a ReLU teacher), and the label flip,
from the same key at another counter. Rows are drawn in parallel over ``(task, block of rows)``;
each work item writes only its own rows. Compiled without fastmath (``exact``): the same bits on
every machine.
"""

import numba
import numpy as np

from ._jit import parallel_pass, serial_helper
from ._math import fma
from ._random import derive_key, minus_two_log_uniform, minus_two_log_uniform32, philox, unit_circle, unit_circle32

#: E[relu(g)] for g ~ N(0, 1): centres a unit-norm ReLU teacher neuron on Gaussian inputs (the
#: compiled labels and ``tasks.TaskFamily.labels`` subtract the same constant).
RELU_MEAN = 1.0 / np.sqrt(2.0 * np.pi)

#: Rows one parallel work item draws, side by side in the vector lanes.
ROW_BLOCK = 16
#: The counter's third word: which stream of a task's key.
INPUTS, FLIPS = 0, 1
#: A normal's work in elements of a plain elementwise pass (a Philox block per two or four normals,
#: Box-Muller's polynomials, the projection's multiply-adds): a draw runs in parallel from
#: ``PARALLEL_MIN_WORK / NORMAL_COST`` = 65 536 normals, where a second thread starts to pay
#: (benchmarks/sampler_threads.py; docs/performance.md, "The sampler's threads").
NORMAL_COST = 32


@serial_helper(exact=True)
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


@serial_helper(exact=True)
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


@serial_helper(exact=True)
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


@serial_helper(exact=True)
def _store_rows(Xt, rows, X):
    """``X[i, j] = Xt[j, i]`` for the block's rows (``X`` is the block's slice of the output)."""
    for i in range(rows):
        for j in range(X.shape[1]):
            X[i, j] = Xt[j, i]


@parallel_pass(
    "void(uint64[:, ::1], int64, {f}[:, :, ::1], {f}[:, ::1], float64[:, ::1], float64[:, ::1], float64[:, ::1], "
    "float64)",
    cost=lambda keys, row0, X, Y, Mp, V, B, noise: X.size * NORMAL_COST,
    exact=True,
)
def draw_per_task(keys, row0, X, Y, Mp, V, B, noise):
    """Tasks' own rows: ``X[t]`` and ``Y[t]`` drawn under ``keys[t]``, rows ``row0 ..`` of each task,
    in parallel over ``(task, block of rows)``."""
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


@parallel_pass(
    "void(uint64[::1], uint64[:, ::1], int64, {f}[:, ::1], {f}[:, ::1], float64[:, ::1], float64[:, ::1], "
    "float64[:, ::1], float64)",
    cost=lambda key, keys, row0, X, Y, Mp, V, B, noise: X.size * NORMAL_COST + Y.size * Mp.shape[1],
    exact=True,
)
def draw_shared(key, keys, row0, X, Y, Mp, V, B, noise):
    """One ``X`` under the shared ``key``, labelled by every task (``keys[t]`` flips task ``t``'s
    labels), in parallel over blocks of rows."""
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


@serial_helper(exact=True)
def derive_task_keys(seed0, seed1, round_index, phase, first, count):
    """Each task's key from the cell's seed, the round, the phase and the task; and the shared
    layout's one input key (counter word 3 = 1)."""
    keys = np.empty((count, 2), dtype=np.uint64)
    for t in range(count):
        keys[t, 0], keys[t, 1] = derive_key(seed0, seed1, round_index, phase, np.uint64(first + t), np.uint64(0))
    shared = np.empty(2, dtype=np.uint64)
    shared[0], shared[1] = derive_key(seed0, seed1, round_index, phase, np.uint64(0), np.uint64(1))
    return keys, shared
