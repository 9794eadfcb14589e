"""The fused passes of a step: the elementwise and reduction work BLAS cannot do.

``mtrl_fast.ops`` runs the big matrix products on a GEMM provider (``mtrl_fast.gemms``: NumPy's BLAS by
default) and these passes between them:
bias and ReLU, loss and its derivative, the head gradients and the masked back-propagation. Each
pass declares its work (the ``cost`` beside its signature), which decides whether it runs in
parallel.

Parallel loops iterate over fixed chunks of rows whose number depends only on the problem's
size, never on the thread count. Each chunk writes only its own output slice or its own row of
a partial-sum buffer, and a short serial loop reduces those buffers in chunk order, so results
are free of races and identical from call to call, whatever the thread count.
"""

import numpy as np
from numba import prange

from ._jit import parallel_pass, serial_helper
from ._losses import _loss_run, loss_cost

_MAX_CHUNKS = 256  # enough to balance any core count; partial buffers stay small
_MIN_CHUNK_ROWS = 16  # below this a chunk is not worth a task switch
# Loss values are summed in the arrays' precision over stretches of this many, then in float64:
# a float32 stretch errs by at most ~256 * 6e-8 relative, and converting every value to float64
# instead made the float32 logistic pass markedly slower.
_SUM_STRETCH = 256
_LOSS_ROWS = 64  # per-task rows whose loss is evaluated in one vectorised run (_SUM_STRETCH or less)


# _MASK_NOTE: the ReLU's slope masks with ``0 * h`` rather than ``0`` where ``h = relu(z)`` is not
# positive: the same zero for a finite ``h``, but NaN where ``z`` (and so ``h``) is NaN, so that a NaN
# in the inputs or parameters reaches every gradient it touches instead of becoming a zero row. The
# fastmath set keeps NaNs (no ``nnan``), so LLVM may not fold ``0 * h`` to ``0``.


def chunk_count(rows):
    """Number of row chunks for a parallel pass over ``rows`` rows."""
    return max(1, min(_MAX_CHUNKS, rows // _MIN_CHUNK_ROWS))


@serial_helper
def _add_into(target, source):
    """``target += source``, serially.

    In a ``parallel=True`` function an array expression such as ``gb += row`` becomes a parallel
    region of its own; inside a serial reduction loop that launched the thread pool once per row
    and made the pass several times slower. Calling this plain loop keeps the reduction serial.
    """
    for c in range(target.shape[0]):
        target[c] += source[c]


@serial_helper
def _copy_into(target, source):
    """``target[:] = source``, as a plain loop: an array assigned to a slice made Numba compile its
    shape-mismatch error path (a formatted message), 4.8 s of a kernel's first compilation."""
    for c in range(target.shape[0]):
        target[c] = source[c]


@serial_helper
def _serial_sum(values):
    """Serial sum. ``values.sum()`` in a ``parallel=True`` function becomes a parallel reduction
    whose rounding depends on the thread count; this one rounds the same way whatever the count."""
    total = 0.0
    for value in values:
        total += value
    return total


@parallel_pass("void({f}[:, ::1], {f}[::1])", cost=lambda Z, b: Z.size)
def bias_relu(Z, b):
    """``Z <- relu(Z + b)`` in place, rows in parallel."""
    rows, m = Z.shape
    zero = Z.dtype.type(0.0)  # a float64 literal would promote the float32 arithmetic
    for i in prange(rows):
        for c in range(m):
            Z[i, c] = max(Z[i, c] + b[c], zero)


@parallel_pass(
    "float64({f}[:, ::1], {f}[:, ::1], intp, float64)", cost=lambda F, Y, loss, scale: F.size * loss_cost(loss, F.dtype)
)
def loss_slopes(F, Y, loss, scale):
    """Sum of ``loss(F, Y)``; overwrites ``F`` with ``scale * loss'(F, Y)``."""
    T, n = F.shape
    scale_f = F.dtype.type(scale)
    partial = np.zeros(T)
    for t in prange(T):
        f_row = F[t]
        y_row = Y[t]
        total = 0.0
        for start in range(0, n, _SUM_STRETCH):
            # Row slices: an index range ending in a min() kept this loop from vectorising.
            total += _loss_run(loss, f_row[start : start + _SUM_STRETCH], y_row[start : start + _SUM_STRETCH], scale_f)
        partial[t] = total
    return _serial_sum(partial)


@parallel_pass("float64({f}[:, ::1], {f}[:, ::1], {f}[::1], intp)", cost=lambda G, H, gb, chunks: G.size)
def relu_mask_colsum(G, H, gb, chunks):
    """``G <- G * (H > 0)`` in place and ``gb <- column sums of the masked G``; returns ``sum(G * H)``
    (the same before or after the mask, since ``H`` is zero where it masks), from which the
    correlation loss takes its value without the output product."""
    rows, m = G.shape
    zero = G.dtype.type(0.0)
    partial = np.zeros((chunks, m), dtype=G.dtype)
    dots = np.zeros(chunks)
    for k in prange(chunks):
        # Row views and a local accumulator let LLVM vectorise the inner loop (indexing the 2-d
        # arrays kept it scalar), and a select instead of a conditional store keeps it branch-free.
        column_sums = np.zeros(m, dtype=G.dtype)
        dot = 0.0
        for i in range(rows * k // chunks, rows * (k + 1) // chunks):
            g_row = G[i]
            h_row = H[i]
            row_dot = zero  # one row in the arrays' precision, then float64 (see _SUM_STRETCH)
            for c in range(m):
                g = g_row[c] if h_row[c] > zero else zero * h_row[c]  # see _MASK_NOTE
                g_row[c] = g
                column_sums[c] += g
                row_dot += g * h_row[c]
            dot += row_dot
        _copy_into(partial[k], column_sums)
        dots[k] = dot
    gb[:] = 0.0
    for k in range(chunks):
        _add_into(gb, partial[k])
    return _serial_sum(dots)


@parallel_pass(
    "void({f}[:, ::1], {f}[:, ::1], {f}[:, ::1], {f}[:, ::1], {f}[::1], intp)",
    cost=lambda R, A, H, D, gb, chunks: H.size * (R.shape[0] + 1),
)
def masked_task_sum(R, A, H, D, gb, chunks):
    """``D <- (R^T A) * (H > 0)`` and ``gb <- column sums of D``, for few tasks.

    With a small ``T`` the product ``R^T A`` is a thin sum of outer products that BLAS runs at a
    fraction of its speed; fused with the mask it is one pass over ``D``.
    """
    T, rows = R.shape
    m = A.shape[1]
    zero = D.dtype.type(0.0)
    partial = np.zeros((chunks, m), dtype=D.dtype)
    for k in prange(chunks):
        column_sums = np.zeros(m, dtype=D.dtype)
        for i in range(rows * k // chunks, rows * (k + 1) // chunks):
            d_row = D[i]
            h_row = H[i]
            for c in range(m):
                d_row[c] = zero
            for t in range(T):
                r = R[t, i]
                a_row = A[t]
                for c in range(m):
                    d_row[c] += r * a_row[c]
            for c in range(m):
                g = d_row[c] if h_row[c] > zero else zero * h_row[c]  # see _MASK_NOTE
                d_row[c] = g
                column_sums[c] += g
        _copy_into(partial[k], column_sums)
    gb[:] = 0.0
    for k in range(chunks):
        _add_into(gb, partial[k])


@parallel_pass(
    "void({f}[:, ::1], {f}[:, ::1], {f}[::1], intp, intp, {f}[::1], intp)",
    cost=lambda Z, A, b, row0, n, F, chunks: Z.size,
)
def per_task_forward_block(Z, A, b, row0, n, F, chunks):
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


@parallel_pass(
    "float64({f}[:, ::1], {f}[::1], {f}[:, ::1], {f}[::1], intp, intp, intp, float64, {f}[:, ::1], {f}[::1], intp)",
    cost=lambda Z, Y, A, b, row0, n, loss, scale, gA, gb, chunks: 4 * Z.size + Z.shape[0] * loss_cost(loss, Z.dtype),
)
def per_task_backward_block(Z, Y, A, b, row0, n, loss, scale, gA, gb, chunks):
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
    scale_f = Z.dtype.type(scale)
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
        outputs = np.empty(_LOSS_ROWS, dtype=Z.dtype)
        total = 0.0
        for part in range(lo, hi, _LOSS_ROWS):
            # Rows go through in runs: outputs first, then the loss over the run in one
            # vectorised loop (a scalar loss per row does not vectorise), then back-propagation.
            end = min(part + _LOSS_ROWS, hi)
            for j in range(part, end):
                z_row = Z[j]
                a_row = A[(row0 + j) // n]
                f = zero
                for c in range(m):
                    h = max(z_row[c] + b[c], zero)
                    z_row[c] = h
                    f += a_row[c] * h
                outputs[j - part] = f
            f_run = outputs[: end - part]
            total += _loss_run(loss, f_run, Y[row0 + part : row0 + end], scale_f)
            for j in range(part, end):
                t = (row0 + j) // n
                z_row = Z[j]
                a_row = A[t]
                r = f_run[j - part]
                if t == first:
                    head = edge[k, 0]
                elif t == last:
                    head = edge[k, 1]
                else:
                    head = gA[t]
                for c in range(m):
                    h = z_row[c]
                    head[c] += r * h
                    back = r * a_row[c] if h > zero else zero * h  # see _MASK_NOTE
                    z_row[c] = back
                    gb_sums[c] += back
        _copy_into(gb_partial[k], gb_sums)
        loss_partial[k] = total
    for k in range(chunks):
        if edge_task[k, 0] >= 0:
            _add_into(gA[edge_task[k, 0]], edge[k, 0])
            if edge_task[k, 1] != edge_task[k, 0]:
                _add_into(gA[edge_task[k, 1]], edge[k, 1])
        _add_into(gb, gb_partial[k])
    return _serial_sum(loss_partial)
