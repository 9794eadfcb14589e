"""The kernels as differentiable PyTorch ops (``pip install "mtrl_fast[torch]"``).

``forward`` and ``loss`` are ``torch.library.custom_op`` operators with ``register_autograd`` and
``register_fake``, so they work with ``loss.backward()``, ``torch.autograd.grad``, ``opcheck``,
``torch.compile(fullgraph=True)`` and ``torch.vmap`` (one kernel call per batch element);
``MultiTaskReLU`` is an ``nn.Module`` around them. Gradients flow to ``W``, ``b`` and ``A``, never
to ``X`` or ``Y``. Contiguous CPU tensors cross into NumPy without a copy.

Derivatives of any order: when a backward is asked for a graph (``create_graph=True``,
``torch.autograd.functional.hessian``, a gradient penalty), the gradients keep the kernels'
values and take their derivatives from a plain PyTorch twin of the computation. ``torch.func``'s
``grad``/``jacrev`` and forward mode (``jvp``, ``jacfwd``, ``forward_ad``) are refused with an
error that names the alternative, never answered with a zero.

Shapes, dtypes and devices are checked before the op; values (finiteness, labels) by the kernels'
validation inside it, so the checks also run in compiled graphs.

``loss`` runs the fused ``loss_and_grad`` once in the forward pass and keeps its gradients for
the backward pass, so a training step costs one fused step (not a forward and a backward).

Import this module before anything else imports torch where you can: importing ``mtrl_fast``
first sets ``OMP_WAIT_POLICY=PASSIVE`` before PyTorch's OpenMP runtime starts (see the README's
"Threads").
"""

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, List, Optional, Tuple

import numpy as np

from . import _runtime, gemms, losses, ops
from ._validate import ArrayMeta, check_shapes
from .losses import loss_id

try:
    import torch
    import torch.autograd.forward_ad as forward_ad
    from torch.utils._python_dispatch import _get_current_dispatch_mode as _current_dispatch_mode
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "mtrl_fast.torch needs PyTorch, which is not installed: pip install 'mtrl_fast[torch]'"
    ) from error

__all__ = ["MultiTaskReLU", "forward", "loss"]

_runtime.warn_if_spinning()  # PyTorch's OpenMP runtime, where it loaded before mtrl_fast

_DTYPES = (torch.float32, torch.float64)
_NUMPY_DTYPES: dict[torch.dtype, np.dtype] = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}


def _check_tensor(name: str, tensor: object, allow_grad: bool = True) -> None:
    """The checks that only a tensor's metadata needs (type, device, dtype, requires_grad): they
    read no data, so they also run on ``torch.func``'s wrapped tensors and under tracing."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(tensor).__name__}")
    if tensor.device.type != "cpu":
        raise ValueError(f"{name} is on {tensor.device}; mtrl_fast's kernels run on the CPU: move it with .cpu()")
    if tensor.dtype not in _DTYPES:
        raise TypeError(f"{name} must have dtype torch.float32 or torch.float64; got {tensor.dtype}")
    if not allow_grad and tensor.requires_grad:
        raise ValueError(
            f"{name} requires grad, but mtrl_fast gives no gradient with respect to {name}: pass {name}.detach()"
        )


def _meta(tensor: Optional[torch.Tensor]) -> Optional[ArrayMeta]:
    return None if tensor is None else ArrayMeta(tuple(tensor.shape), tensor.dim(), _NUMPY_DTYPES[tensor.dtype])


def _refuse_forward_mode(function: str, tensors: Sequence[Optional[torch.Tensor]]) -> None:
    """Forward-mode AD would see no tangent come out of the op (the kernels are reverse-mode only),
    and ``torch.func``'s grad cannot enter a custom op's autograd: refuse both by name rather than
    return a zero. A tangent on any input counts, the data's and the upstream gradient's too."""
    stack = torch._C._functorch.get_interpreter_stack() or ()
    keys = {interpreter.key() for interpreter in stack}
    TransformType = torch._C._functorch.TransformType
    if TransformType.Jvp in keys or any(
        t is not None and forward_ad.unpack_dual(t).tangent is not None for t in tensors
    ):
        raise RuntimeError(
            f"mtrl_fast.torch.{function} has no forward-mode derivative (torch.func.jvp, jacfwd, "
            "torch.autograd.forward_ad): use reverse mode, for example "
            "torch.autograd.functional.jvp, which mtrl_fast supports to any order"
        )
    if TransformType.Grad in keys:
        raise RuntimeError(
            f"mtrl_fast.torch.{function} does not support torch.func.grad (nor torch.func's "
            "jacrev, hessian, vjp): use torch.autograd.grad or torch.autograd.functional "
            "(jacobian, hessian, vjp, hvp), which work to any order; torch.func.vmap works"
        )


def _check(
    function: str,
    X: torch.Tensor,
    W: torch.Tensor,
    b: Optional[torch.Tensor],
    A: torch.Tensor,
    Y: Optional[torch.Tensor] = None,
) -> None:
    """Types, devices, dtypes and shapes, before the op. Values (finiteness, labels) are checked
    by the kernels' own validation inside the op, where the data are plain tensors."""
    for name, tensor, allow_grad in (("X", X, False), ("W", W, True), ("b", b, True), ("A", A, True), ("Y", Y, False)):
        if tensor is not None:
            _check_tensor(name, tensor, allow_grad)
    if torch.compiler.is_compiling():
        return  # tracing sees fake tensors; the op checks shapes and values when it runs
    _refuse_forward_mode(function, (X, W, b, A, Y))
    if Y is None:
        check_shapes(_meta(X), _meta(W), _meta(b), _meta(A), convert=False)
    else:
        check_shapes(_meta(X), _meta(W), _meta(b), _meta(A), _meta(Y), convert=False)


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    """A plain tensor's data as an array (no copy when contiguous)."""
    return tensor.detach().contiguous().numpy()


def _numpy_or_none(tensor: Optional[torch.Tensor]) -> Optional[np.ndarray]:
    return None if tensor is None else _numpy(tensor)


# --- plain PyTorch twins, for derivatives of derivatives -------------------------------------------
# Package-internal (not in __all__): the benchmarks' PyTorch peers run the same formulas.


def plain_forward(X: torch.Tensor, W: torch.Tensor, b: Optional[torch.Tensor], A: torch.Tensor) -> torch.Tensor:
    """``F`` in plain PyTorch operations: differentiable to any order (our ops' backward recomputes
    through it when a graph of the gradient is asked for)."""
    Z = X @ W.T
    if b is not None:
        Z = Z + b
    H = torch.relu(Z)
    return A @ H.T if X.dim() == 2 else torch.einsum("tnm,tm->tn", H, A)


#: PyTorch's ``softplus`` and ``relu`` for the loss table's formulas.
_TORCH_OPS = SimpleNamespace(softplus=torch.nn.functional.softplus, relu=torch.relu)


def plain_losses(name: str, F: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Per-example losses ``loss(F, Y)`` in plain PyTorch: the loss table's formula
    (``mtrl_fast.losses``); raises for an unknown name."""
    result: torch.Tensor = losses.loss(name).formula(_TORCH_OPS, F, Y)
    return result


def _differentiable(
    kernel_grads: Sequence[Optional[torch.Tensor]],
    output: torch.Tensor,
    params: Sequence[Optional[torch.Tensor]],
    grad_outputs: Optional[torch.Tensor] = None,
) -> List[Optional[torch.Tensor]]:
    """The kernels' gradients, made differentiable with respect to ``params`` (and to
    ``grad_outputs``) by the plain twin ``output``: the values stay the kernels' own, bit for bit,
    and their derivatives come from the twin's graph."""
    wanted = [p for p in params if p is not None and p.requires_grad]
    twin = iter(
        torch.autograd.grad(output, wanted, grad_outputs, create_graph=True, allow_unused=True, materialize_grads=True)
    )
    result = []
    for p, g in zip(params, kernel_grads):
        if p is None or not p.requires_grad:
            result.append(g)
        else:
            again = next(twin)
            assert g is not None  # the kernels computed every gradient that is wanted
            result.append(g + (again - again.detach()))
    return result


def _graph_wanted(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether a backward must build a graph of its result (``create_graph=True``, ``hessian``)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


# --- the ops ---------------------------------------------------------------------------------------


def _on_torch_gemm() -> Any:
    """The ops' products run on PyTorch's matmul, the BLAS of the user's own PyTorch code, unless a
    ``mtrl_fast.gemm(...)`` block in this thread asks for another."""
    return gemms.gemm(gemms.torch_ops_gemm())


@torch.library.custom_op("mtrl_fast::forward", mutates_args=())
def _forward_op(
    X: torch.Tensor, W: torch.Tensor, b: Optional[torch.Tensor], A: torch.Tensor, check_finite: bool = False
) -> torch.Tensor:
    with _on_torch_gemm():
        F = ops.forward(_numpy(X), _numpy(W), _numpy_or_none(b), _numpy(A), check_finite=check_finite)
    return torch.from_numpy(F)


@_forward_op.register_fake
def _forward_fake(
    X: torch.Tensor, W: torch.Tensor, b: Optional[torch.Tensor], A: torch.Tensor, check_finite: bool = False
) -> torch.Tensor:
    return X.new_empty((A.shape[0], X.shape[-2]))


@torch.library.custom_op("mtrl_fast::backward", mutates_args=())
def _backward_op(
    X: torch.Tensor, W: torch.Tensor, b: Optional[torch.Tensor], A: torch.Tensor, dF: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with _on_torch_gemm():
        grads = ops.backward(_numpy(X), _numpy(W), _numpy_or_none(b), _numpy(A), _numpy(dF), check_finite=False)
    gb = W.new_empty(0) if b is None else torch.from_numpy(grads.b)
    return torch.from_numpy(grads.W), gb, torch.from_numpy(grads.A)


@_backward_op.register_fake
def _backward_fake(
    X: torch.Tensor, W: torch.Tensor, b: Optional[torch.Tensor], A: torch.Tensor, dF: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.empty_like(W), W.new_empty(0) if b is None else torch.empty_like(b), torch.empty_like(A)


def _forward_setup(ctx: Any, inputs: Tuple[Any, ...], output: Any) -> None:
    X, W, b, A = inputs[:4]
    ctx.has_bias = b is not None
    ctx.save_for_backward(X, W, b, A)


def _forward_backward(ctx: Any, dF: torch.Tensor, *unused: Any) -> Tuple[Any, ...]:
    # The backward is an operator too, so that tracing (opcheck, torch.compile) sees no NumPy.
    X, W, b, A = ctx.saved_tensors
    if not torch.compiler.is_compiling():
        _refuse_forward_mode("forward", (dF,))  # a dual upstream gradient would lose its tangent
    with torch.no_grad():  # its derivatives, where wanted, come from the twin below
        gW, gb, gA = _backward_op(X, W, b, A, dF)
    gb = gb if ctx.has_bias else None
    if _graph_wanted(W, b, A, dF):
        with torch.enable_grad():
            gW, gb, gA = _differentiable((gW, gb, gA), plain_forward(X, W, b, A), (W, b, A), dF)
    return None, gW, gb, gA, None


_forward_op.register_autograd(_forward_backward, setup_context=_forward_setup)


def _loss_and_grad(
    X: torch.Tensor,
    Y: torch.Tensor,
    W: torch.Tensor,
    b: Optional[torch.Tensor],
    A: torch.Tensor,
    loss: str,
    first_layer: bool = True,
    check_finite: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    with _on_torch_gemm():
        value, grads = ops.loss_and_grad(
            _numpy(X),
            _numpy(Y),
            _numpy(W),
            _numpy_or_none(b),
            _numpy(A),
            loss,
            check_finite=check_finite,
            first_layer=first_layer,
        )
    # An op's outputs cannot be None: a gradient not computed is an empty tensor.
    gW = torch.from_numpy(grads.W) if first_layer else W.new_empty(0)
    gb = torch.from_numpy(grads.b) if first_layer and b is not None else W.new_empty(0)
    return torch.tensor(value, dtype=X.dtype), gW, gb, torch.from_numpy(grads.A)


_loss_op = torch.library.custom_op("mtrl_fast::loss_and_grad", mutates_args=())(_loss_and_grad)


@_loss_op.register_fake
def _loss_fake(
    X: torch.Tensor,
    Y: torch.Tensor,
    W: torch.Tensor,
    b: Optional[torch.Tensor],
    A: torch.Tensor,
    loss: str,
    first_layer: bool = True,
    check_finite: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    gW = torch.empty_like(W) if first_layer else W.new_empty(0)
    gb = torch.empty_like(b) if first_layer and b is not None else W.new_empty(0)
    return X.new_empty(()), gW, gb, torch.empty_like(A)


def _loss_setup(ctx: Any, inputs: Tuple[Any, ...], output: Any) -> None:
    X, Y, W, b, A, loss = inputs[:6]
    _, gW, gb, gA = output
    ctx.has_bias = b is not None
    ctx.loss = loss
    ctx.first_layer = inputs[6] if len(inputs) > 6 else True
    ctx.save_for_backward(X, Y, W, b, A, gW, gb, gA)
    ctx.mark_non_differentiable(gW, gb, gA)
    # The gradient outputs are never differentiated: autograd would otherwise fill a zero tensor of
    # each one's shape for the backward, three parallel fills a step for nothing.
    ctx.set_materialize_grads(False)


def _loss_backward(ctx: Any, d_value: Optional[torch.Tensor], *unused: Any) -> Tuple[Any, ...]:
    if d_value is None:  # nothing flows back through the value (grads are not materialized)
        return (None,) * 8
    X, Y, W, b, A, gW, gb, gA = ctx.saved_tensors
    gW = gW if ctx.first_layer else None
    gb = gb if ctx.first_layer and ctx.has_bias else None
    if _graph_wanted(W, b, A, d_value):
        # A gradient penalty, a Hessian: the saved gradients' own derivatives, through the twin.
        first = (W, b) if ctx.first_layer else (None, None)
        with torch.enable_grad():
            value = plain_losses(ctx.loss, plain_forward(X, W, b, A), Y).mean()
            gW, gb, gA = _differentiable((gW, gb, gA), value, (*first, A))
    grads = [None if g is None else d_value * g for g in (gW, gb, gA)]
    return None, None, *grads, None, None, None


_loss_op.register_autograd(_loss_backward, setup_context=_loss_setup)


class _EagerLoss(torch.autograd.Function):
    """The loss op in plain eager mode: the custom op's own computation, context and backward
    (``_loss_and_grad``, ``_loss_setup``, ``_loss_backward``) as a plain autograd function, without
    ``torch.library``'s dispatch, which cost about 0.3 ms a call (a third of a small step: the
    redispatch below autograd, the defaults filled in, the generated function's apply). Under
    ``torch.compile``, a ``torch.func`` transform or a dispatch mode the custom op runs instead."""

    @staticmethod
    def forward(ctx: Any, *inputs: Any) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        outputs = _loss_and_grad(*inputs)
        _loss_setup(ctx, inputs, outputs)
        return outputs

    @staticmethod
    def backward(ctx: Any, *grad_outputs: Any) -> Tuple[Any, ...]:
        return _loss_backward(ctx, *grad_outputs)


def _plain_eager(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether the call is plain eager PyTorch: no compilation, no ``torch.func`` transform, no
    dispatch mode, and tensors that are plain tensors or parameters (no subclass of their own)."""
    return (
        not torch.compiler.is_compiling()
        and not torch._C._functorch.get_interpreter_stack()
        and _current_dispatch_mode() is None
        and all(t is None or type(t) in (torch.Tensor, torch.nn.Parameter) for t in tensors)
    )


def _sequential_vmap(op: Any) -> None:
    """A ``torch.vmap`` rule that runs ``op`` once per batch element (as JAX's ``sequential``
    callbacks do): correct for any batched argument, at one kernel call per element."""

    def rule(info: Any, in_dims: Tuple[Optional[int], ...], *args: Any) -> Tuple[Any, Any]:
        def element(k: int) -> List[Any]:
            return [a if dim is None else a.select(dim, k) for a, dim in zip(args, in_dims)]

        results = [op(*element(k)) for k in range(info.batch_size)]
        if isinstance(results[0], torch.Tensor):
            return torch.stack(results), 0
        return tuple(torch.stack(outputs) for outputs in zip(*results)), (0,) * len(results[0])

    torch.library.register_vmap(op, rule)


if hasattr(torch.library, "register_vmap"):  # PyTorch 2.5 and later; 2.4's vmap falls back to a loop too
    for _op in (_forward_op, _backward_op, _loss_op):
        _sequential_vmap(_op)


def forward(
    X: torch.Tensor, W: torch.Tensor, b: Optional[torch.Tensor], A: torch.Tensor, *, check_finite: bool = True
) -> torch.Tensor:
    """Outputs ``F (T, n)`` of every task's network, differentiable with respect to ``W``, ``b``, ``A``.

    Parameters
    ----------
    X : Tensor, shape (n, d) or (T, n, d)
        Inputs (shared or per-task layout); must not require grad.
    W : Tensor, shape (m, d)
    b : Tensor, shape (m,), or None
    A : Tensor, shape (T, m)
    check_finite : bool, default True
        Raise ``ValueError`` if any input holds NaN or Inf.

    Returns
    -------
    Tensor, shape (T, n)
        In the inputs' dtype (float32 or float64, CPU).

    Raises
    ------
    ValueError
        A bad shape, a non-finite value, a tensor not on the CPU, or ``X.requires_grad``.
    TypeError
        A dtype other than float32/float64, mixed dtypes, or a non-tensor.
    """
    _check("forward", X, W, b, A)
    return _forward_op(X, W, b, A, check_finite)


def loss(
    X: torch.Tensor,
    Y: torch.Tensor,
    W: torch.Tensor,
    b: Optional[torch.Tensor],
    A: torch.Tensor,
    loss: str = "logistic",
    *,
    check_finite: bool = True,
) -> torch.Tensor:
    """The mean over tasks of each task's mean loss, as a 0-d tensor differentiable with respect to
    ``W``, ``b`` and ``A`` (``mtrl_fast.loss_and_grad`` in one fused call).

    Parameters
    ----------
    X : Tensor, shape (n, d) or (T, n, d)
        Inputs; must not require grad.
    Y : Tensor, shape (T, n)
        Targets, in X's dtype; -1 or +1 for the classification losses.
    W, b, A : Tensor
        Parameters as in :func:`forward`.
    loss : str
        One of ``mtrl_fast.LOSSES``.
    check_finite : bool, default True

    Returns
    -------
    Tensor, shape ()

    Notes
    -----
    When neither ``W`` nor ``b`` requires grad (a head step), only ``A``'s gradient is computed,
    which skips the step's largest products.
    """
    loss_id(loss)
    _check("loss", X, W, b, A, Y)
    # A head step (W and b frozen) needs only A's gradient: skip the first layer's products.
    first_layer = torch.is_grad_enabled() and (W.requires_grad or (b is not None and b.requires_grad))
    if _plain_eager(X, Y, W, b, A):
        return _EagerLoss.apply(X, Y, W, b, A, loss, first_layer, check_finite)[0]
    return _loss_op(X, Y, W, b, A, loss, first_layer, check_finite)[0]


_mean_loss = loss  # for MultiTaskReLU.loss, whose argument ``loss`` hides this function's name


class MultiTaskReLU(torch.nn.Module):
    """A two-layer ReLU network with a first layer shared by ``tasks`` linear heads.

    Parameters
    ----------
    d : int
        Input dimension.
    width : int
        Neurons ``m``.
    tasks : int
        Number of tasks ``T``.
    bias : bool, default True
        Learn a first-layer bias.
    dtype : torch.dtype, default torch.float32

    Attributes
    ----------
    W : Parameter, shape (width, d)
        Rows drawn uniformly from the unit sphere.
    b : Parameter, shape (width,), or None
        Zeros.
    A : Parameter, shape (tasks, width)
        Gaussian with variance ``1 / width``.
    """

    def __init__(self, d: int, width: int, tasks: int, bias: bool = True, dtype: torch.dtype = torch.float32):
        super().__init__()
        for name, value in (("d", d), ("width", width), ("tasks", tasks)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if dtype not in _DTYPES:
            raise TypeError(f"dtype must be torch.float32 or torch.float64; got {dtype}")
        W = torch.randn(width, d, dtype=dtype)
        self.W = torch.nn.Parameter(W / W.norm(dim=1, keepdim=True))
        self.b = torch.nn.Parameter(torch.zeros(width, dtype=dtype)) if bias else None
        self.A = torch.nn.Parameter(torch.randn(tasks, width, dtype=dtype) / width**0.5)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Outputs ``F (T, n)`` for ``X (n, d)`` (shared) or ``X (T, n, d)`` (per-task)."""
        return forward(X, self.W, self.b, self.A)

    def loss(self, X: torch.Tensor, Y: torch.Tensor, loss: str = "logistic") -> torch.Tensor:
        """The mean task loss on ``(X, Y)`` (see :func:`loss`)."""
        return _mean_loss(X, Y, self.W, self.b, self.A, loss)

    def extra_repr(self) -> str:
        return f"d={self.W.shape[1]}, width={self.W.shape[0]}, tasks={self.A.shape[0]}, bias={self.b is not None}"
