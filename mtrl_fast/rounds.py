"""One round of the paper's alternating gradient descent: every task's head first, then the shared
first layer on the gradient aggregated over all tasks."""

from collections.abc import Callable

import numpy as np

from ._validate import check_problem
from .gradients import Gradients
from .ops import loss_and_grad

#: ``loss_and_grad`` or a function with its signature (``mtrl_fast.reference.loss_and_grad``).
Step = Callable[..., tuple[float, Gradients]]


def alternating_round(
    head_batch: tuple[np.ndarray, np.ndarray],
    layer_batch: tuple[np.ndarray, np.ndarray],
    W: np.ndarray,
    b: np.ndarray | None,
    A: np.ndarray,
    *,
    loss: str = "correlation",
    head_steps: int = 1,
    head_lr: float = 0.1,
    lr: float = 1.0,
    weight_decay: float = 1.0,
    step: Step = loss_and_grad,
) -> float:
    """One round, in place: ``head_steps`` steps of every head, then one step of ``W`` and ``b``.

    Parameters
    ----------
    head_batch, layer_batch : tuple of ndarray
        ``(X, Y)`` for the head steps and for the first-layer step (fresh samples in the
        paper), in either layout; labels ``(T, n)``.
    W, b, A : ndarray
        Parameters, updated in place (``b`` may be ``None``).
    loss : str
        One of ``mtrl_fast.LOSSES``.
    head_steps : int
        Steps of the heads; each task's head moves along the gradient of its own mean loss.
    head_lr, lr : float
        Step sizes of the heads and of the first layer.
    weight_decay : float
        ``lambda``: the first-layer step is ``W <- (1 - lr lambda) W - lr grad``; with one round
        and ``lr lambda = 1`` this is the paper's one-large-step variant.
    step : callable
        ``loss_and_grad`` or one with its signature (``mtrl_fast.reference.loss_and_grad``).

    Returns
    -------
    float
        The objective at the first-layer step, before it is taken.

    Raises
    ------
    ValueError, TypeError
        As ``loss_and_grad`` for either batch (a NaN or Inf included), a parameter that is not a
        writeable ndarray, or a step setting out of range. Every check runs before anything is
        updated: a refused call leaves ``W``, ``b`` and ``A`` as they were.
    """
    _check_round(head_batch, layer_batch, W, b, A, loss, head_steps, (head_lr, lr, weight_decay))
    X, Y = head_batch
    step_heads(X, Y, W, b, A, loss=loss, steps=head_steps, lr=head_lr, step=step)
    X, Y = layer_batch
    value, grads = step(X, Y, W, b, A, loss, check_finite=False)
    assert grads.W is not None  # a first-layer step computes it
    update_first_layer(W, b, grads.W, grads.b, lr=lr, weight_decay=weight_decay)
    return float(value)


def _check_round(
    head_batch: tuple[np.ndarray, np.ndarray],
    layer_batch: tuple[np.ndarray, np.ndarray],
    W: np.ndarray,
    b: np.ndarray | None,
    A: np.ndarray,
    loss: str,
    head_steps: int,
    rates: tuple[float, float, float],
) -> None:
    """Everything ``alternating_round`` could refuse halfway, refused before the first update."""
    for name, value in (("W", W), ("b", b), ("A", A)):
        if value is None and name == "b":
            continue
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{name} is updated in place and must be a NumPy array; got {type(value).__name__}")
        if not value.flags.writeable:
            raise ValueError(f"{name} is updated in place and must be writeable; got a read-only array")
    for name, batch in (("head_batch", head_batch), ("layer_batch", layer_batch)):
        if not isinstance(batch, tuple | list) or len(batch) != 2:
            raise TypeError(f"{name} must be a pair (X, Y)")
        try:
            check_problem(batch[0], W, b, A, batch[1], loss=loss)
        except (TypeError, ValueError) as error:
            raise type(error)(f"{name}: {error}") from None
    if isinstance(head_steps, bool) or not isinstance(head_steps, int | np.integer) or head_steps < 0:
        raise ValueError(f"head_steps must be a non-negative integer; got {head_steps!r}")
    for name, rate in zip(("head_lr", "lr", "weight_decay"), rates):
        if not np.isfinite(rate):
            raise ValueError(f"{name} must be finite; got {rate!r}")


def step_heads(
    X: np.ndarray,
    Y: np.ndarray,
    W: np.ndarray,
    b: np.ndarray | None,
    A: np.ndarray,
    *,
    loss: str,
    steps: int,
    lr: float,
    step: Step = loss_and_grad,
) -> None:
    """``steps`` steps of every head in ``A`` (in place), the first layer frozen.

    ``step`` gives the gradient of the task-averaged loss; task ``t``'s own mean loss has
    gradient ``T * grads.A[t]``, so each head moves along its own task's loss.
    """
    scale = W.dtype.type(lr * A.shape[0])
    for _ in range(steps):
        _, grads = step(X, Y, W, b, A, loss, check_finite=False, first_layer=False)
        A -= scale * grads.A


def update_first_layer(
    W: np.ndarray, b: np.ndarray | None, gW: np.ndarray, gb: np.ndarray | None, *, lr: float, weight_decay: float
) -> None:
    """The first layer's step with weight decay, in place: ``W <- (1 - lr lambda) W - lr gW``."""
    dtype = W.dtype.type
    W *= dtype(1.0 - lr * weight_decay)
    W -= dtype(lr) * gW
    if b is not None and gb is not None:
        b -= dtype(lr) * gb
