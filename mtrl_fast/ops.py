"""The public step: validate, then run the layout's BLAS products and fused passes."""

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from . import _kernels as kernels
from . import _profile, gemms
from ._scratch import scratch
from ._validate import Problem, check_problem, check_requests
from .gradients import Gradients
from .losses import PER_TASK, SHARED, loss_id

# Up to this many tasks the shared layout forms (R^T A) * mask in one fused pass: BLAS runs a
# product with an inner dimension this thin several times slower than the fused pass.
FUSED_TASK_SUM_MAX_T = 4

#: The compiled passes a step may run, by layout (what a run compiles ahead of its first step:
#: ``_kernels._compile``). The shared layout takes the fused task sum or the mask pass by ``T``.
STEP_PASSES = {
    SHARED: ("bias_relu", "loss_slopes", "masked_task_sum", "relu_mask_colsum"),
    PER_TASK: ("per_task_backward_block",),
}

# The per-task step keeps one (rows, m) block of pre-activations at a time: at most BLOCK_BYTES,
# and no more than an eighth of the inputs' size (so a step's peak memory stays within 1.25x of
# its inputs, parameters and gradients), but at least BLOCK_MIN_BYTES so that the block's BLAS
# products stay efficient.
BLOCK_BYTES = 64 * 2**20
BLOCK_MIN_BYTES = 4 * 2**20


def _multiplier(dtype: np.dtype) -> gemms.Matmul:
    """The matrix product of one step, ``product(left, right, out=None)``, looked up once a step:
    the GEMM in force (``gemms.get_gemm``) for ``dtype``, through the step's recorder
    (``_profile``) when one is recording, which then sees each product with its operands. (Looked
    up at each product, the setting and the recorder cost a step of five products 10 us.)"""
    multiply = gemms.matmul(gemms.resolve(gemms.get_gemm(), dtype))
    if _profile.log() is None:
        return multiply

    def recorded(left: np.ndarray, right: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        label = f"product {left.shape} @ {right.shape}"
        return _profile.timed_call(label, multiply, left, right, out=out, operands=(left, right))

    return recorded


@contextmanager
def record_products() -> Iterator[list[tuple[np.ndarray, np.ndarray]]]:
    """Collect the operands ``(left, right)`` of every matrix product the calls inside run; the
    list is filled when the block ends.

    For the benchmarks: the step's own products are derived from what the step really runs, in
    this Python thread. The operands are the step's own arrays (views, not copies).
    """
    products: list[tuple[np.ndarray, np.ndarray]] = []
    with _profile.recording() as parts:
        yield products
    products.extend(part.operands for part in parts if part.operands is not None)


def _bias_or_zeros(p: Problem) -> np.ndarray:
    return p.b if p.b is not None else np.zeros(p.m, dtype=p.X.dtype)


def _block_rows(p: Problem) -> int:
    """Stacked per-task rows processed at once (see ``BLOCK_BYTES``)."""
    budget = min(BLOCK_BYTES, max(BLOCK_MIN_BYTES, p.X.nbytes // 8))
    return max(1, min(p.T * p.n, budget // (p.m * p.X.dtype.itemsize)))


def _row_blocks(p: Problem) -> Iterator[tuple[int, int]]:
    """Yield ``(row0, rows)`` slices of the stacked ``(T n, d)`` per-task input."""
    total = p.T * p.n
    step = _block_rows(p)
    for row0 in range(0, total, step):
        yield row0, min(step, total - row0)


def forward(
    X: np.ndarray, W: np.ndarray, b: np.ndarray | None, A: np.ndarray, *, check_finite: bool = True
) -> np.ndarray:
    """Outputs of every task's network, ``F[t, i] = A[t] @ relu(W x_(t,)i + b)``.

    Parameters
    ----------
    X : ndarray, shape (n, d) or (T, n, d)
        Inputs: one matrix shared by every task, or one per task.
    W : ndarray, shape (m, d)
        Shared first layer.
    b : ndarray, shape (m,), or None
        First-layer bias; ``None`` for none.
    A : ndarray, shape (T, m)
        One linear head per task.
    check_finite : bool, default True
        Raise ``ValueError`` if any input holds NaN or Inf.

    Returns
    -------
    F : ndarray, shape (T, n)
        Outputs, in the inputs' dtype (float32 or float64; all arrays must share it).

    Raises
    ------
    ValueError
        A shape that does not fit the others, an empty dimension, or a non-finite value.
    TypeError
        A dtype other than float32/float64, or arrays of different dtypes.
    """
    p = _profile.timed_call("checks", check_problem, X, W, b, A, check_finite=check_finite)
    bias = _bias_or_zeros(p)
    product = _multiplier(p.X.dtype)
    if p.layout == SHARED:
        H = product(p.X, p.W.T, out=scratch("H", (p.n, p.m), p.X.dtype))
        kernels.bias_relu(H, bias)
        return product(p.A, H.T)
    F = np.empty(p.T * p.n, dtype=p.X.dtype)
    X_rows = p.X.reshape(p.T * p.n, p.d)
    Z_block = scratch("Z", (_block_rows(p), p.m), p.X.dtype)
    for row0, rows in _row_blocks(p):
        Z = Z_block[:rows]
        product(X_rows[row0 : row0 + rows], p.W.T, out=Z)
        kernels.per_task_forward_block(Z, p.A, bias, row0, p.n, F, kernels.chunk_count(rows))
    return F.reshape(p.T, p.n)


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
    """Objective and its gradients for all tasks at once.

    The objective is the mean over tasks of each task's mean loss,
    ``L = 1/(T n) * sum_t sum_i loss(F[t, i], Y[t, i])`` with ``F = forward(X, W, b, A)``.

    Parameters
    ----------
    X : ndarray, shape (n, d) or (T, n, d)
        Inputs: one matrix shared by every task, or one per task.
    Y : ndarray, shape (T, n)
        Targets; -1 or +1 for the classification losses. Integer arrays are accepted.
    W : ndarray, shape (m, d)
        Shared first layer.
    b : ndarray, shape (m,), or None
        First-layer bias; ``None`` for none.
    A : ndarray, shape (T, m)
        One linear head per task.
    loss : str, default "logistic"
        Per-example loss, one of ``mtrl_fast.LOSSES`` (the table in ``mtrl_fast.losses``).
    check_finite : bool, default True
        Raise ``ValueError`` if any input holds NaN or Inf.
    first_layer : bool, default True
        Compute the gradients of ``W`` and ``b``. ``False`` (a head step, which updates ``A``
        only) skips their back-propagation and the largest product of the step, and gives
        ``grads.W = grads.b = None``.
    gram : bool, default False
        Also compute ``grads.gram = D^T D`` (float64, ``(m, m)``), where ``D`` stacks the
        objective's gradient with respect to every example's pre-activations (``grads.W = D^T X``).
        Needs ``first_layer``.

    Returns
    -------
    value : float
        The objective ``L``.
    grads : Gradients
        ``grads.W (m, d)``, ``grads.b (m,)`` (``None`` when ``b`` is ``None`` or
        ``first_layer`` is false) and ``grads.A (T, m)``: the gradients of ``L``, in the inputs'
        dtype.

    Raises
    ------
    ValueError
        A shape that does not fit the others, an empty dimension, a non-finite value, a label
        outside {-1, +1} for a classification loss, or an unknown loss.
    TypeError
        A dtype other than float32/float64, or arrays of different dtypes.

    Notes
    -----
    Shared layout: the sum over tasks collapses before the large product,
    ``D = (R^T A) * 1[Z > 0]``, so a step costs ``O(n d m + n m T)``. Per-task layout: the
    stacked ``(T n, d)`` rows go through in blocks of at most 64 MiB of pre-activations, with
    the loss, head gradients and masking fused into one pass per block.
    """
    check_requests(first_layer, gram)
    p = _profile.timed_call("checks", check_problem, X, W, b, A, Y, loss=loss, check_finite=check_finite)
    return fused_step(p, loss_id(loss), 1.0 / (p.T * p.n), first_layer=bool(first_layer), gram=bool(gram))


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
    """Vector-Jacobian product of :func:`forward`: the gradients of ``sum(dF * F)``.

    For any upstream gradient ``dF`` of the outputs ``F = forward(X, W, b, A)`` (a loss of your
    own, a framework's autograd), the gradients with respect to ``W``, ``b`` and ``A``, on the
    same fused passes as :func:`loss_and_grad` (which is ``forward``, the loss and ``backward``
    in one call, with ``dF`` the loss's derivative).

    Parameters
    ----------
    X : ndarray, shape (n, d) or (T, n, d)
        Inputs: one matrix shared by every task, or one per task.
    W : ndarray, shape (m, d)
        Shared first layer.
    b : ndarray, shape (m,), or None
        First-layer bias; ``None`` for none.
    A : ndarray, shape (T, m)
        One linear head per task.
    dF : ndarray, shape (T, n)
        Upstream gradient of the outputs.
    check_finite : bool, default True
        Raise ``ValueError`` if any input holds NaN or Inf.
    gram : bool, default False
        Also compute ``grads.gram = D^T D`` (float64, ``(m, m)``), where ``D`` stacks the
        gradients with respect to every example's pre-activations (``grads.W = D^T X``).

    Returns
    -------
    Gradients
        ``W (m, d)``, ``b (m,)`` (``None`` when ``b`` is ``None``) and ``A (T, m)``, in the
        inputs' dtype.

    Raises
    ------
    ValueError
        A shape that does not fit the others, an empty dimension, or a non-finite value.
    TypeError
        A dtype other than float32/float64, or arrays of different dtypes.
    """
    p = _profile.timed_call("checks", check_problem, X, W, b, A, dF, check_finite=check_finite, y_name="dF")
    return fused_step(p, kernels.UPSTREAM, 1.0, gram=bool(gram))[1]


def fused_step(
    p: Problem,
    loss_code: int,
    scale: float,
    first_layer: bool = True,
    gram: bool = False,
    out: Gradients | None = None,
) -> tuple[float, Gradients]:
    """The fused step on checked inputs: ``(sum of losses * scale, Gradients)``.

    With ``loss_code = UPSTREAM``, ``p.Y`` holds the upstream gradient ``dF`` itself and
    ``scale`` is 1: the shared layout then skips the output product, and the per-task pass takes
    ``dF`` in place of the loss's derivative. Without ``first_layer`` the step stops at the
    heads' gradient: no mask pass in the shared layout, no ``D^T X`` product in either. With
    ``gram``, ``D^T D`` is summed in float64 from the same ``D`` (block by block, per task).

    The correlation loss's slope ``-y`` needs no outputs either: in the shared layout, where the
    mask pass runs over ``D = R^T A``, its objective comes from the gradient's own terms,
    ``sum_(t,i) -y F = sum(D * H) / scale`` with ``R = -scale Y``, and ``A H^T`` is skipped.
    """
    assert p.Y is not None, "a step needs targets or an upstream gradient"
    bias = _bias_or_zeros(p)
    gb = np.zeros(p.m, dtype=p.X.dtype) if out is None or out.b is None else out.b
    out_A, out_W = (None, None) if out is None else (out.A, out.W)
    product = _multiplier(p.X.dtype)
    gW: np.ndarray | None
    if p.layout == SHARED:
        H = product(p.X, p.W.T, out=scratch("H", (p.n, p.m), p.X.dtype))
        kernels.bias_relu(H, bias)
        fused_task_sum = p.T <= FUSED_TASK_SUM_MAX_T
        value_from_mask = loss_code == kernels.CORRELATION and first_layer and not fused_task_sum
        if loss_code == kernels.UPSTREAM:
            total, R = 0.0, p.Y
        elif value_from_mask:
            R = p.Y * p.X.dtype.type(-scale)  # the slopes loss_slopes would write, bit for bit
            total = 0.0  # set from the mask pass's sum below
        else:
            R = product(p.A, H.T, out=scratch("R", (p.T, p.n), p.X.dtype))
            total = kernels.loss_slopes(R, p.Y, loss_code, scale)
        gA = product(R, H, out=out_A)
        if not first_layer:
            return total * scale, Gradients(W=None, b=None, A=gA)
        chunks = kernels.chunk_count(p.n)
        if fused_task_sum:
            D = scratch("D", H.shape, H.dtype)
            kernels.masked_task_sum(R, p.A, H, D, gb, chunks)
        else:
            D = product(R.T, p.A, out=scratch("D", H.shape, H.dtype))
            dot = kernels.relu_mask_colsum(D, H, gb, chunks)
            if value_from_mask:
                total = dot / scale
        gW = product(D.T, p.X, out=out_W)
        DtD = _gram(product, D) if gram else None
    else:
        total = 0.0
        gb[:] = 0.0
        gA = np.zeros((p.T, p.m), dtype=p.X.dtype) if out_A is None else out_A
        gA[:] = 0.0
        gW = (np.empty((p.m, p.d), dtype=p.X.dtype) if out_W is None else out_W) if first_layer else None
        DtD = np.zeros((p.m, p.m)) if gram else None
        X_rows = p.X.reshape(p.T * p.n, p.d)
        Y_rows = p.Y.reshape(p.T * p.n)
        Z_block = scratch("Z", (_block_rows(p), p.m), p.X.dtype)
        for row0, rows in _row_blocks(p):
            Z = Z_block[:rows]
            X_block = X_rows[row0 : row0 + rows]
            product(X_block, p.W.T, out=Z)
            total += kernels.per_task_backward_block(
                Z, Y_rows, p.A, bias, row0, p.n, loss_code, scale, gA, gb, kernels.chunk_count(rows)
            )
            if not first_layer:
                continue
            if row0 == 0:
                product(Z.T, X_block, out=gW)
            else:
                gW += product(Z.T, X_block)
            if DtD is not None:
                DtD += _gram(product, Z)  # Z now holds this block's rows of D
    b_grad = gb if p.b is not None and first_layer else None
    return total * scale, Gradients(W=gW, b=b_grad, A=gA, gram=DtD)


def _gram(product: gemms.Matmul, D: np.ndarray) -> np.ndarray:
    """``D^T D`` in the inputs' dtype (BLAS runs it as a symmetric rank-k update, half a product),
    returned in float64 so that the blocks add up without further rounding."""
    return product(D.T, D).astype(np.float64)
