"""The kernels as differentiable PyTorch ops (``pip install "mtrl_fast[torch]"``).

``forward`` and ``loss`` are ``torch.library.custom_op`` operators with ``register_autograd`` and
``register_fake``, so they work with ``loss.backward()``, ``torch.autograd.grad``, ``opcheck``
and tracing; ``MultiTaskReLU`` is an ``nn.Module`` around them. Gradients flow to ``W``, ``b`` and
``A``, never to ``X`` or ``Y``. Contiguous CPU tensors cross into NumPy without a copy.

``loss`` runs the fused ``loss_and_grad`` once in the forward pass and keeps its gradients for
the backward pass, so a training step costs one fused step (not a forward and a backward).

Import this module before anything else imports torch where you can: importing ``mtrl_fast``
first sets ``OMP_WAIT_POLICY=PASSIVE`` before PyTorch's OpenMP runtime starts (see the README's
"Threads").
"""
from typing import Optional, Tuple

from . import ops
from ._validate import check_problem

try:
    import torch
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError("mtrl_fast.torch needs PyTorch, which is not installed: pip install 'mtrl_fast[torch]'") from error

__all__ = ["MultiTaskReLU", "forward", "loss"]

_DTYPES = (torch.float32, torch.float64)


def _array(name, tensor, allow_grad=True):
    """A tensor's data as a NumPy array (no copy when contiguous), after the checks NumPy cannot do."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(tensor).__name__}")
    if tensor.device.type != "cpu":
        raise ValueError(f"{name} is on {tensor.device}; mtrl_fast's kernels run on the CPU: move it with .cpu()")
    if tensor.dtype not in _DTYPES:
        raise TypeError(f"{name} must have dtype torch.float32 or torch.float64; got {tensor.dtype}")
    if not allow_grad and tensor.requires_grad:
        raise ValueError(f"{name} requires grad, but mtrl_fast gives no gradient with respect to {name}: "
                         f"pass {name}.detach()")
    return tensor.detach().contiguous().numpy()


def _numpy(tensor):
    return None if tensor is None else tensor.detach().numpy()


def _check(X, W, b, A, Y=None, loss_name=None, check_finite=True):
    arrays = dict(X=_array("X", X, allow_grad=False), W=_array("W", W), A=_array("A", A),
                  b=None if b is None else _array("b", b))
    if Y is None:
        check_problem(arrays["X"], arrays["W"], arrays["b"], arrays["A"], check_finite=check_finite)
    else:
        check_problem(arrays["X"], arrays["W"], arrays["b"], arrays["A"], _array("Y", Y, allow_grad=False),
                      loss=loss_name, check_finite=check_finite)


@torch.library.custom_op("mtrl_fast::forward", mutates_args=())
def _forward_op(X: torch.Tensor, W: torch.Tensor, b: Optional[torch.Tensor], A: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(ops.forward(X.numpy(), W.numpy(), _numpy(b), A.numpy(), check_finite=False))


@_forward_op.register_fake
def _forward_fake(X, W, b, A):
    return X.new_empty((A.shape[0], X.shape[-2]))


@torch.library.custom_op("mtrl_fast::backward", mutates_args=())
def _backward_op(X: torch.Tensor, W: torch.Tensor, b: Optional[torch.Tensor], A: torch.Tensor,
                 dF: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    grads = ops.backward(X.numpy(), W.numpy(), _numpy(b), A.numpy(), dF.contiguous().numpy(), check_finite=False)
    gb = W.new_empty(0) if b is None else torch.from_numpy(grads.b)
    return torch.from_numpy(grads.W), gb, torch.from_numpy(grads.A)


@_backward_op.register_fake
def _backward_fake(X, W, b, A, dF):
    return torch.empty_like(W), W.new_empty(0) if b is None else torch.empty_like(b), torch.empty_like(A)


def _forward_setup(ctx, inputs, output):
    X, W, b, A = inputs
    ctx.has_bias = b is not None
    ctx.save_for_backward(X, W, b, A)


def _forward_backward(ctx, dF):
    # The backward is an operator too, so that tracing (opcheck, torch.compile) sees no NumPy.
    X, W, b, A = ctx.saved_tensors
    gW, gb, gA = _backward_op(X, W, b, A, dF)
    return None, gW, gb if ctx.has_bias else None, gA


_forward_op.register_autograd(_forward_backward, setup_context=_forward_setup)


@torch.library.custom_op("mtrl_fast::loss_and_grad", mutates_args=())
def _loss_op(X: torch.Tensor, Y: torch.Tensor, W: torch.Tensor, b: Optional[torch.Tensor], A: torch.Tensor,
             loss: str, first_layer: bool = True) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    value, grads = ops.loss_and_grad(X.numpy(), Y.numpy(), W.numpy(), _numpy(b), A.numpy(), loss, check_finite=False,
                                     first_layer=first_layer)
    # An op's outputs cannot be None: a gradient not computed is an empty tensor.
    gW = torch.from_numpy(grads.W) if first_layer else W.new_empty(0)
    gb = torch.from_numpy(grads.b) if first_layer and b is not None else W.new_empty(0)
    return torch.tensor(value, dtype=X.dtype), gW, gb, torch.from_numpy(grads.A)


@_loss_op.register_fake
def _loss_fake(X, Y, W, b, A, loss, first_layer=True):
    gW = torch.empty_like(W) if first_layer else W.new_empty(0)
    gb = torch.empty_like(b) if first_layer and b is not None else W.new_empty(0)
    return X.new_empty(()), gW, gb, torch.empty_like(A)


def _loss_setup(ctx, inputs, output):
    _, gW, gb, gA = output
    ctx.has_bias = inputs[3] is not None
    ctx.first_layer = inputs[6] if len(inputs) > 6 else True
    ctx.save_for_backward(gW, gb, gA)
    ctx.mark_non_differentiable(gW, gb, gA)


def _loss_backward(ctx, d_value, *unused):
    gW, gb, gA = ctx.saved_tensors
    if not ctx.first_layer:
        return None, None, None, None, d_value * gA, None, None
    return None, None, d_value * gW, d_value * gb if ctx.has_bias else None, d_value * gA, None, None


_loss_op.register_autograd(_loss_backward, setup_context=_loss_setup)


def forward(X: torch.Tensor, W: torch.Tensor, b: Optional[torch.Tensor], A: torch.Tensor, *,
            check_finite: bool = True) -> torch.Tensor:
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
    _check(X, W, b, A, check_finite=check_finite)
    return _forward_op(X, W, b, A)


def loss(X: torch.Tensor, Y: torch.Tensor, W: torch.Tensor, b: Optional[torch.Tensor], A: torch.Tensor,
         loss: str = "logistic", *, check_finite: bool = True) -> torch.Tensor:
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
    loss : {"logistic", "squared", "hinge", "correlation"}
    check_finite : bool, default True

    Returns
    -------
    Tensor, shape ()

    Notes
    -----
    When neither ``W`` nor ``b`` requires grad (a head step), only ``A``'s gradient is computed,
    which skips the step's largest products.
    """
    _check(X, W, b, A, Y, loss_name=loss, check_finite=check_finite)
    # A head step (W and b frozen) needs only A's gradient: skip the first layer's products.
    first_layer = torch.is_grad_enabled() and (W.requires_grad or (b is not None and b.requires_grad))
    return _loss_op(X, Y, W, b, A, loss, first_layer)[0]


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
        self.A = torch.nn.Parameter(torch.randn(tasks, width, dtype=dtype) / width ** 0.5)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Outputs ``F (T, n)`` for ``X (n, d)`` (shared) or ``X (T, n, d)`` (per-task)."""
        return forward(X, self.W, self.b, self.A)

    def loss(self, X: torch.Tensor, Y: torch.Tensor, loss: str = "logistic") -> torch.Tensor:
        """The mean task loss on ``(X, Y)`` (see :func:`loss`)."""
        return _mean_loss(X, Y, self.W, self.b, self.A, loss)

    def extra_repr(self) -> str:
        return f"d={self.W.shape[1]}, width={self.W.shape[0]}, tasks={self.A.shape[0]}, bias={self.b is not None}"

