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
from contextlib import contextmanager

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic, overload

from ._config import FASTMATH

SQUARED, LOGISTIC, HINGE, CORRELATION = 0, 1, 2, 3  # order of losses.LOSSES

_MAX_CHUNKS = 256  # enough to balance any core count here; partial buffers stay small
_MIN_CHUNK_ROWS = 16  # below this a chunk is not worth a task switch
# Loss values are summed in the arrays' precision over stretches of this many, then in float64:
# a float32 stretch errs by at most ~256 * 6e-8 relative, and converting every value to float64
# instead cost 45% more time in the float32 logistic pass.
_SUM_STRETCH = 256
_LOSS_ROWS = 64  # per-task rows whose loss is evaluated in one vectorised run (_SUM_STRETCH or less)


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


# Every kernel and helper: fastmath (see _config) and NumPy's error model. Numba's default, Python's,
# checks each float division for a zero divisor so as to raise ZeroDivisionError; that branch
# keeps a loop with a division scalar (a float32 logistic loop over 262K losses: 2.6 ms with it, 0.18 ms
# without).
# Divisors here are never zero, or are validated sizes.
_COMPILE_OPTIONS = dict(fastmath=set(FASTMATH), error_model="numpy", cache=True)


def _typed(signature, parallel=True):
    """Type a kernel for float32 and float64 (``{f}`` in ``signature``), cached on disk.

    Parallel kernels compile on first use; serial helpers compile at once, because other
    kernels call them and Numba must see them as compiled functions.
    """
    signatures = [signature.format(f=f) for f in ("float32", "float64")]
    options = dict(_COMPILE_OPTIONS, nogil=True)
    if not parallel:
        return numba.njit(signatures, **options)
    return lambda py_func: _LazyKernel(py_func, signatures, dict(options, parallel=True))


# A parallel pass pays only beyond this much work, counted in elements of a plain elementwise
# pass (about 0.1 ns each on one core here). Waking Numba's workers cost about 100 us per pass on
# this 2-core VM (a tiny step: 300 us on 2 threads, 36 us on one), and inside a step OpenBLAS's
# workers, which spin for about 0.1 s after each product, hold the other cores anyway.
PARALLEL_MIN_WORK = 1 << 21


def loss_cost(loss, dtype):
    """Work of one loss evaluation, in elements of a plain elementwise pass."""
    if loss != LOGISTIC:
        return 1
    return 8 if dtype == np.float32 else 24


@contextmanager
def threads_for(work):
    """Run the kernels called inside on the calling thread alone when ``work`` is below
    ``PARALLEL_MIN_WORK``; Numba's thread count is per Python thread, so this is thread-safe."""
    previous = numba.get_num_threads()
    if work >= PARALLEL_MIN_WORK or previous == 1:
        yield
        return
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def chunk_count(rows):
    """Number of row chunks for a parallel pass over ``rows`` rows."""
    return max(1, min(_MAX_CHUNKS, rows // _MIN_CHUNK_ROWS))


@intrinsic
def _float64_from_bits(typingctx, bits):
    """Reinterpret an int64's bits as a float64 (a register move, which LLVM vectorises)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@intrinsic
def _float32_from_bits(typingctx, bits):
    """Reinterpret an int32's bits as a float32."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that k * _LN2_HI is exact for |k| < 2^11
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e+00
_LN2 = 0.6931471805599453


@numba.njit(["float64(float64)"], inline="always", **_COMPILE_OPTIONS)
def _exp_neg(x):
    """``exp(-x)`` for ``x >= 0`` to about 1e-15 relative, with no libm call.

    libm's ``exp`` and ``log1p`` are opaque calls that keep a loop scalar (about 25 ns per
    logistic loss here); this polynomial form vectorises. ``-x = k ln 2 + r`` with
    ``|r| <= ln 2 / 2``; ``exp(r)`` by its degree-13 Taylor polynomial (error below 1e-17);
    ``2^k`` from its exponent bits.
    """
    x = min(x, 745.0)  # beyond this exp(-x) is below the smallest subnormal
    k = math.floor(-x * _INV_LN2 + 0.5)
    r = (-x - k * _LN2_HI) - k * _LN2_LO
    # Horner written out: a loop over a tuple of coefficients measured 2.3x slower here (the
    # logistic pass lost its vectorisation).
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    # 2^k in two factors so that k down to -1075 (subnormal results) stays representable.
    half = np.int64(k) // 2
    return p * _float64_from_bits((half + 1023) << 52) * _float64_from_bits((np.int64(k) - half + 1023) << 52)


@numba.njit(["float64(float64)"], inline="always", **_COMPILE_OPTIONS)
def _log1p_unit(e):
    """``log(1 + e)`` for ``0 <= e <= 1`` to about 1e-15 relative, with no libm call.

    ``log v = 2 atanh(s)``, ``s = (v - 1) / (v + 1)``, with ``v = 1 + e`` or ``(1 + e) / 2`` so
    that ``|s| <= 0.172``; the odd series to ``s^23`` then errs below 1e-17. ``s = e / (2 + e)``
    keeps full relative precision for small ``e``.
    """
    upper = e > 0.41421356237309503  # sqrt(2) - 1
    s = (e - 1.0 if upper else e) / (e + 3.0 if upper else e + 2.0)  # one division, two selects
    s2 = s * s
    p = 1.0 / 23.0
    p = p * s2 + 1.0 / 21.0
    p = p * s2 + 1.0 / 19.0
    p = p * s2 + 1.0 / 17.0
    p = p * s2 + 1.0 / 15.0
    p = p * s2 + 1.0 / 13.0
    p = p * s2 + 1.0 / 11.0
    p = p * s2 + 1.0 / 9.0
    p = p * s2 + 1.0 / 7.0
    p = p * s2 + 1.0 / 5.0
    p = p * s2 + 1.0 / 3.0
    p = p * s2 + 1.0
    return 2.0 * s * p + (_LN2 if upper else 0.0)


# float32 twins: the same forms with float32 constants and shorter polynomials, so twice as many
# lanes per vector and about half the terms (a float32 logistic pass over 1M losses on one core:
# 2.5 ms in float64 arithmetic, 0.8 ms in float32).
_LN2_HI_32 = np.float32(0.693359375)  # 10 significant bits: k * _LN2_HI_32 is exact for |k| < 2^14
_LN2_LO_32 = np.float32(-2.12194440e-4)
_INV_LN2_32 = np.float32(1.44269504)
_LN2_32 = np.float32(0.6931472)


@numba.njit(["float32(float32)"], inline="always", **_COMPILE_OPTIONS)
def _exp_neg32(x):
    """``exp(-x)`` for ``x >= 0`` in float32 to about 1e-7 relative (see ``_exp_neg``).

    Degree-7 Taylor polynomial on ``|r| <= ln 2 / 2``: truncation error below 1e-8.
    """
    x = min(x, np.float32(104.0))  # exp(-104) is below the smallest float32 subnormal
    k = np.floor(-x * _INV_LN2_32 + np.float32(0.5))
    r = (-x - k * _LN2_HI_32) - k * _LN2_LO_32
    p = np.float32(1.0 / 5040.0)
    p = p * r + np.float32(1.0 / 720.0)
    p = p * r + np.float32(1.0 / 120.0)
    p = p * r + np.float32(1.0 / 24.0)
    p = p * r + np.float32(1.0 / 6.0)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    ki = np.int32(k)
    half = ki >> np.int32(1)
    bias = np.int32(127)
    return (p * _float32_from_bits((half + bias) << np.int32(23))
            * _float32_from_bits((ki - half + bias) << np.int32(23)))


@numba.njit(["float32(float32)"], inline="always", **_COMPILE_OPTIONS)
def _log1p_unit32(e):
    """``log(1 + e)`` for ``0 <= e <= 1`` in float32 to about 1e-7 relative (see ``_log1p_unit``).

    The odd series to ``s^9`` errs below 3e-9 for ``|s| <= 0.172``.
    """
    upper = e > np.float32(0.41421356)
    s = (e - np.float32(1.0) if upper else e) / (e + np.float32(3.0) if upper else e + np.float32(2.0))
    s2 = s * s
    p = np.float32(1.0 / 9.0)
    p = p * s2 + np.float32(1.0 / 7.0)
    p = p * s2 + np.float32(1.0 / 5.0)
    p = p * s2 + np.float32(1.0 / 3.0)
    p = p * s2 + np.float32(1.0)
    return np.float32(2.0) * s * p + (_LN2_32 if upper else np.float32(0.0))


@numba.njit(["UniTuple(float64, 2)(intp, float64, float64)"], inline="always", **_COMPILE_OPTIONS)
def _loss_value_and_slope64(loss, f, y):
    """Loss value and its derivative in ``f``, in float64 (see ``losses`` for the definitions)."""
    if loss == SQUARED:
        e = f - y
        return 0.5 * e * e, e
    if loss == LOGISTIC:
        # log(1 + exp(-m)) = max(-m, 0) + log1p(exp(-|m|)), branch-free so loops vectorise.
        margin = y * f
        e = _exp_neg(abs(margin))
        value = max(-margin, 0.0) + _log1p_unit(e)
        slope = -y * (e if margin >= 0.0 else 1.0) / (1.0 + e)
        # min/max above would drop a NaN; keep it visible. Selects, not an early return, so
        # that loops over this function still vectorise.
        keep = margin == margin
        return (value if keep else margin), (slope if keep else margin)
    if loss == HINGE:
        margin = y * f
        if margin >= 1.0:
            return 0.0, 0.0
        return 1.0 - margin, -y  # a NaN margin lands here and stays NaN
    return -y * f, -y  # CORRELATION


@numba.njit(["UniTuple(float32, 2)(intp, float32, float32)"], inline="always", **_COMPILE_OPTIONS)
def _loss_value_and_slope32(loss, f, y):
    """``_loss_value_and_slope64`` in float32."""
    zero = np.float32(0.0)
    one = np.float32(1.0)
    if loss == SQUARED:
        e = f - y
        return np.float32(0.5) * e * e, e
    if loss == LOGISTIC:
        margin = y * f
        e = _exp_neg32(abs(margin))
        value = max(-margin, zero) + _log1p_unit32(e)
        slope = -y * (e if margin >= zero else one) / (one + e)
        keep = margin == margin
        return (value if keep else margin), (slope if keep else margin)
    if loss == HINGE:
        margin = y * f
        if margin >= one:
            return zero, zero
        return one - margin, -y
    return -y * f, -y  # CORRELATION


def _loss_value_and_slope(loss, f, y):
    """Loss value and its derivative in ``f``, in the precision of ``f`` (float32 or float64).

    Kernels call this with their arrays' elements, and the overload below picks the float32 or
    float64 implementation when they compile; from Python it dispatches the same way.
    """
    if isinstance(f, np.float32):
        return _loss_value_and_slope32(loss, f, np.float32(y))
    return _loss_value_and_slope64(loss, f, y)


@overload(_loss_value_and_slope, inline="always",
          jit_options=dict(fastmath=_COMPILE_OPTIONS["fastmath"], error_model=_COMPILE_OPTIONS["error_model"]))
def _loss_value_and_slope_compiled(loss, f, y):
    if f == types.float32:
        return lambda loss, f, y: _loss_value_and_slope32(loss, f, y)
    return lambda loss, f, y: _loss_value_and_slope64(loss, f, y)


@_typed("void({f}[::1], {f}[::1])", parallel=False)
def _add_into(target, source):
    """``target += source``, serially.

    In a ``parallel=True`` function an array expression such as ``gb += row`` becomes a parallel
    region of its own; inside a serial reduction loop that launched the thread pool once per row
    and made a pass 5x slower. Calling this plain loop instead keeps the reduction serial.
    """
    for c in range(target.shape[0]):
        target[c] += source[c]


@numba.njit([f"{f}(intp, {f}[::1], {f}[::1], {f})" for f in ("float32", "float64")], inline="always",
            **_COMPILE_OPTIONS)
def _loss_run(loss, F, Y, scale):
    """Sum of ``loss(F, Y)`` over a short run, in the arrays' precision; overwrites ``F`` with
    ``scale * loss'(F, Y)``. One vectorised loop: runs stay short (``_SUM_STRETCH``) so that a
    float32 sum stays accurate."""
    total = F.dtype.type(0.0)
    for i in range(F.shape[0]):
        value, slope = _loss_value_and_slope(loss, F[i], Y[i])
        total += value
        F[i] = scale * slope
    return total


@numba.njit(["float64(float64[::1])"], **_COMPILE_OPTIONS)
def _serial_sum(values):
    """Serial sum. ``values.sum()`` in a ``parallel=True`` function becomes a parallel reduction
    whose rounding depends on the thread count; this one rounds the same way whatever the count."""
    total = 0.0
    for value in values:
        total += value
    return total


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
    scale_f = F.dtype.type(scale)
    partial = np.zeros(T)
    for t in prange(T):
        f_row = F[t]
        y_row = Y[t]
        total = 0.0
        for start in range(0, n, _SUM_STRETCH):
            # Row slices: an index range ending in a min() measured 10x slower here.
            total += _loss_run(loss, f_row[start:start + _SUM_STRETCH], y_row[start:start + _SUM_STRETCH],
                               scale_f)
        partial[t] = total
    return _serial_sum(partial)


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


@_typed("void({f}[:, ::1], {f}[:, ::1], {f}[:, ::1], {f}[:, ::1], {f}[::1], intp)")
def _masked_task_sum(R, A, H, D, gb, chunks):
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
                g = d_row[c] if h_row[c] > zero else zero
                d_row[c] = g
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
            # vectorised loop (a scalar loss per row measured 25-45 ns), then back-propagation.
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
            f_run = outputs[:end - part]
            total += _loss_run(loss, f_run, Y[row0 + part:row0 + end], scale_f)
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
    return _serial_sum(loss_partial)
