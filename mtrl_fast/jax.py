"""The kernels as differentiable JAX functions (``pip install "mtrl_fast[jax]"``).

``forward`` and ``loss`` are ``jax.custom_vjp`` functions around ``jax.pure_callback``: they work
under ``jit``, ``grad``, ``value_and_grad`` and ``vmap``, in float32, and in float64 when
``jax_enable_x64`` is on. Gradients flow to ``W``, ``b`` and ``A``; ``X`` (and ``Y``) are taken as
constants, as under ``jax.lax.stop_gradient``, so their cotangents are zero.

Arguments are checked when the function is traced (shapes, dtypes, the loss name), because an
exception raised inside a callback is undefined behaviour in JAX; values are not (no finiteness
or label check under ``jit``). ``vmap`` uses ``vmap_method="sequential"``: the batch runs as one
host call per element, which costs the callback's overhead once per element.

``loss`` runs the fused ``loss_and_grad`` once and keeps its gradients for the backward pass.
"""
from typing import Optional

import numpy as np

from . import ops
from ._validate import check_shapes
from .losses import loss_id

try:
    import jax
    import jax.numpy as jnp
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError("mtrl_fast.jax needs JAX, which is not installed: pip install 'mtrl_fast[jax]'") from error

__all__ = ["forward", "loss"]

_VMAP = "sequential"


def _host(array):
    return None if array is None else np.asarray(array)


def _struct(shape, dtype):
    return jax.ShapeDtypeStruct(shape, dtype)


def _check(X, W, b, A, Y=None):
    for name, value in (("X", X), ("W", W), ("b", b), ("A", A), ("Y", Y)):
        if value is not None and not hasattr(value, "dtype"):
            raise TypeError(f"{name} must be an array; got {type(value).__name__}")
    if Y is None:
        return check_shapes(X, W, b, A, convert=False)
    return check_shapes(X, W, b, A, Y, convert=False)


def _grad_structs(W, b, A):
    return (_struct(W.shape, W.dtype), None if b is None else _struct(b.shape, b.dtype), _struct(A.shape, A.dtype))


def _forward_host(X, W, b, A):
    return ops.forward(_host(X), _host(W), _host(b), _host(A), check_finite=False)


def _backward_host(X, W, b, A, dF):
    return tuple(ops.backward(_host(X), _host(W), _host(b), _host(A), _host(dF), check_finite=False))


@jax.custom_vjp
def _forward(X, W, b, A):
    return jax.pure_callback(_forward_host, _struct((A.shape[0], X.shape[-2]), X.dtype), X, W, b, A,
                             vmap_method=_VMAP)


def _forward_fwd(X, W, b, A):
    return _forward(X, W, b, A), (X, W, b, A)


def _forward_bwd(residuals, dF):
    X, W, b, A = residuals
    gW, gb, gA = jax.pure_callback(_backward_host, _grad_structs(W, b, A), X, W, b, A, dF, vmap_method=_VMAP)
    return jnp.zeros_like(X), gW, gb, gA


_forward.defvjp(_forward_fwd, _forward_bwd)


def forward(X, W, b: Optional[jax.Array], A) -> jax.Array:
    """Outputs ``F (T, n)`` of every task's network; see ``mtrl_fast.forward``.

    Parameters
    ----------
    X : Array, shape (n, d) or (T, n, d)
    W : Array, shape (m, d)
    b : Array, shape (m,), or None
    A : Array, shape (T, m)

    Returns
    -------
    Array, shape (T, n)
        Differentiable with respect to ``W``, ``b`` and ``A``.
    """
    _check(X, W, b, A)
    return _forward(jax.lax.stop_gradient(X), W, b, A)


def _make_loss(name):
    def value_and_grads_host(X, Y, W, b, A):
        value, grads = ops.loss_and_grad(_host(X), _host(Y), _host(W), _host(b), _host(A), name, check_finite=False)
        return (np.asarray(value, dtype=np.asarray(X).dtype),) + tuple(grads)

    def call(X, Y, W, b, A):
        structs = (_struct((), X.dtype),) + _grad_structs(W, b, A)
        return jax.pure_callback(value_and_grads_host, structs, X, Y, W, b, A, vmap_method=_VMAP)

    @jax.custom_vjp
    def mean_loss(X, Y, W, b, A):
        return call(X, Y, W, b, A)[0]

    def fwd(X, Y, W, b, A):
        value, gW, gb, gA = call(X, Y, W, b, A)
        return value, (X, Y, gW, gb, gA)

    def bwd(residuals, d_value):
        X, Y, gW, gb, gA = residuals
        return (jnp.zeros_like(X), jnp.zeros_like(Y), d_value * gW, None if gb is None else d_value * gb,
                d_value * gA)

    mean_loss.defvjp(fwd, bwd)
    return mean_loss


_LOSS_FUNCTIONS = {}


def loss(X, Y, W, b: Optional[jax.Array], A, loss: str = "logistic") -> jax.Array:
    """The mean over tasks of each task's mean loss, a 0-d array differentiable with respect to
    ``W``, ``b`` and ``A`` (``mtrl_fast.loss_and_grad`` in one fused call).

    Parameters
    ----------
    X : Array, shape (n, d) or (T, n, d)
    Y : Array, shape (T, n)
        Targets in X's dtype; -1 or +1 for the classification losses (not checked under ``jit``).
    W, b, A : Array
        Parameters as in :func:`forward`.
    loss : {"logistic", "squared", "hinge", "correlation"}

    Returns
    -------
    Array, shape ()
    """
    loss_id(loss)
    _check(X, W, b, A, Y)
    if loss not in _LOSS_FUNCTIONS:
        _LOSS_FUNCTIONS[loss] = _make_loss(loss)
    return _LOSS_FUNCTIONS[loss](jax.lax.stop_gradient(X), jax.lax.stop_gradient(Y), W, b, A)
