"""Numba kernels: the elementwise and reduction passes of a step, fused around BLAS products.

Private and typed: each kernel is compiled once for float32 and once for float64, C-ordered
arrays only, so no input can trigger a surprise compile. The big matrix products run in
NumPy's BLAS between these kernels (``ops``); the kernels do the passes BLAS cannot fuse: bias
and ReLU, loss and its derivative, the head gradients and the masked back-propagation.

Parallel loops iterate over fixed chunks of rows whose number depends only on the problem's
size, never on the thread count. Each chunk writes only its own output slice or its own row of
a partial-sum buffer, and a short serial loop reduces those buffers in chunk order, so results
are free of races and identical from call to call.
"""
import math
import threading

import numba
import numpy as np
from numba import prange

from ._config import FASTMATH

SQUARED, LOGISTIC, HINGE, CORRELATION = 0, 1, 2, 3  # order of losses.LOSSES

_MAX_CHUNKS = 256  # enough to balance any core count here; partial buffers stay small
_MIN_CHUNK_ROWS = 16  # below this a chunk is not worth a task switch


class _LazyKernel:
    """A kernel compiled (or loaded from Numba's disk cache) for all its signatures on first call.

    Importing the package then costs nothing, a command can say that a first compilation is
    under way, and code that never calls a kernel never compiles one.
    """

    def __init__(self, py_func, signatures, options):
        self.py_func = py_func
        self.__doc__ = py_func.__doc__
        self.__name__ = py_func.__name__
        self._signatures = signatures
        self._options = options
        self._dispatcher = None
        self._lock = threading.Lock()

    @property
    def dispatcher(self):
        if self._dispatcher is None:
            with self._lock:  # two threads' first calls compile once
                if self._dispatcher is None:
                    self._dispatcher = numba.njit(self._signatures, **self._options)(self.py_func)
        return self._dispatcher

    def __call__(self, *args):
        return self.dispatcher(*args)


def _typed(signature, parallel=True):
    """Type a kernel for float32 and float64 (``{f}`` in ``signature``), cached on disk.

    Parallel kernels compile on first use; serial helpers compile at once, because other
    kernels call them and Numba must see them as compiled functions.
    """
    signatures = [signature.format(f=f) for f in ("float32", "float64")]
    options = dict(fastmath=set(FASTMATH), cache=True, nogil=True)
    if not parallel:
        return numba.njit(signatures, **options)
    return lambda py_func: _LazyKernel(py_func, signatures, dict(options, parallel=True))


def chunk_count(rows):
    """Number of row chunks for a parallel pass over ``rows`` rows."""
    return max(1, min(_MAX_CHUNKS, rows // _MIN_CHUNK_ROWS))


@numba.njit(["UniTuple(float64, 2)(intp, float64, float64)"], inline="always", fastmath=set(FASTMATH),
            cache=True)
def _loss_value_and_slope(loss, f, y):
    """Loss value and its derivative in ``f``, in float64 (see ``losses`` for the definitions)."""
    if loss == SQUARED:
        e = f - y
        return 0.5 * e * e, e
    if loss == LOGISTIC:
        margin = y * f
        if margin >= 0.0:
            e = math.exp(-margin)
            return math.log1p(e), -y * e / (1.0 + e)
        e = math.exp(margin)
        return math.log1p(e) - margin, -y / (1.0 + e)
    if loss == HINGE:
        margin = y * f
        if margin < 1.0:
            return 1.0 - margin, -y
        return 0.0, 0.0
    return -y * f, -y  # CORRELATION


@_typed("void({f}[::1], {f}[::1])", parallel=False)
def _add_into(target, source):
    """``target += source``, serially.

    In a ``parallel=True`` function an array expression such as ``gb += row`` becomes a parallel
    region of its own; inside a serial reduction loop that launched the thread pool once per row
    and made a pass 5x slower. Calling this plain loop instead keeps the reduction serial.
    """
    for c in range(target.shape[0]):
        target[c] += source[c]


@_typed("void({f}[:, ::1], {f}[::1])")
def _bias_relu(Z, b):
    """``Z <- relu(Z + b)`` in place, rows in parallel."""
    rows, m = Z.shape
    zero = Z.dtype.type(0.0)  # a float64 literal would promote the float32 arithmetic
    for i in prange(rows):
        for c in range(m):
            Z[i, c] = max(Z[i, c] + b[c], zero)


@_typed("float64({f}[:, ::1], {f}[:, ::1], intp, float64)")
def _loss_slopes(F, Y, loss, scale):
    """Sum of ``loss(F, Y)``; overwrites ``F`` with ``scale * loss'(F, Y)``."""
    T, n = F.shape
    partial = np.zeros(T)
    for t in prange(T):
        total = 0.0
        for i in range(n):
            value, slope = _loss_value_and_slope(loss, np.float64(F[t, i]), np.float64(Y[t, i]))
            total += value
            F[t, i] = scale * slope
        partial[t] = total
    return partial.sum()


@_typed("void({f}[:, ::1], {f}[:, ::1], {f}[::1], intp)")
def _relu_mask_colsum(G, H, gb, chunks):
    """``G <- G * (H > 0)`` in place and ``gb <- column sums of the masked G``."""
    rows, m = G.shape
    zero = G.dtype.type(0.0)
    partial = np.zeros((chunks, m), dtype=G.dtype)
    for k in prange(chunks):
        # Row views and a local accumulator let LLVM vectorise the inner loop (6x faster than
        # indexing the 2-d arrays), and a select instead of a conditional store keeps it branch-free.
        column_sums = np.zeros(m, dtype=G.dtype)
        for i in range(rows * k // chunks, rows * (k + 1) // chunks):
            g_row = G[i]
            h_row = H[i]
            for c in range(m):
                g = g_row[c] if h_row[c] > zero else zero
                g_row[c] = g
                column_sums[c] += g
        partial[k] = column_sums
    gb[:] = 0.0
    for k in range(chunks):
        _add_into(gb, partial[k])


@_typed("void({f}[:, ::1], {f}[:, ::1], {f}[::1], intp, intp, {f}[::1], intp)")
def _per_task_forward_block(Z, A, b, row0, n, F, chunks):
    """Per-task outputs of one block of stacked rows.

    ``Z`` holds ``X_rows @ W.T`` for the stacked rows ``row0 ..`` of the ``(T n, d)`` input;
    ``F`` is the flat ``(T n,)`` output.
    """
    rows, m = Z.shape
    zero = Z.dtype.type(0.0)
    for k in prange(chunks):
        for j in range(rows * k // chunks, rows * (k + 1) // chunks):
            z_row = Z[j]
            a_row = A[(row0 + j) // n]
            f = zero
            for c in range(m):
                f += a_row[c] * max(z_row[c] + b[c], zero)
            F[row0 + j] = f


@_typed("float64({f}[:, ::1], {f}[::1], {f}[:, ::1], {f}[::1], intp, intp, intp, float64, {f}[:, ::1], {f}[::1],"
        " intp)")
def _per_task_backward_block(Z, Y, A, b, row0, n, loss, scale, gA, gb, chunks):
    """Fused backward pass over one block of stacked per-task rows; returns the block's loss sum.

    On entry ``Z`` holds ``X_rows @ W.T`` for stacked rows ``row0 ..``; on exit it holds the
    back-propagated ``D = (R A) * 1[Z + b > 0]`` for those rows, ready for ``gW += D.T @ X_rows``.
    Adds the block's head gradients to ``gA`` and its bias gradient to ``gb``. ``Y`` is flat.

    A chunk owns every task that lies wholly inside its rows and adds to those rows of ``gA``
    directly; its first and last task may be shared with other chunks, so their sums go to the
    chunk's two private rows of ``edge`` and are added to ``gA`` serially afterwards.
    """
    rows, m = Z.shape
    zero = Z.dtype.type(0.0)
    edge = np.zeros((chunks, 2, m), dtype=Z.dtype)
    edge_task = np.full((chunks, 2), -1, dtype=np.intp)
    gb_partial = np.zeros((chunks, m), dtype=Z.dtype)
    loss_partial = np.zeros(chunks)
    for k in prange(chunks):
        lo = rows * k // chunks
        hi = rows * (k + 1) // chunks
        if lo == hi:
            continue
        first = (row0 + lo) // n
        last = (row0 + hi - 1) // n
        edge_task[k, 0] = first
        edge_task[k, 1] = last
        gb_sums = np.zeros(m, dtype=Z.dtype)  # local, so the inner loops vectorise
        total = 0.0
        for j in range(lo, hi):
            t = (row0 + j) // n
            z_row = Z[j]
            a_row = A[t]
            f = zero
            for c in range(m):
                h = max(z_row[c] + b[c], zero)
                z_row[c] = h
                f += a_row[c] * h
            value, slope = _loss_value_and_slope(loss, np.float64(f), np.float64(Y[row0 + j]))
            total += value
            r = Z.dtype.type(scale * slope)
            if t == first:
                head = edge[k, 0]
            elif t == last:
                head = edge[k, 1]
            else:
                head = gA[t]
            for c in range(m):
                h = z_row[c]
                head[c] += r * h
                back = r * a_row[c] if h > zero else zero
                z_row[c] = back
                gb_sums[c] += back
        gb_partial[k] = gb_sums
        loss_partial[k] = total
    for k in range(chunks):
        if edge_task[k, 0] >= 0:
            _add_into(gA[edge_task[k, 0]], edge[k, 0])
            if edge_task[k, 1] != edge_task[k, 0]:
                _add_into(gA[edge_task[k, 1]], edge[k, 1])
        _add_into(gb, gb_partial[k])
    return loss_partial.sum()
