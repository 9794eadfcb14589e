"""mtrl_fast.jax: gradients under jit, grad and vmap, agreement with JAX's own autograd, errors."""
import numpy as np
import pytest

import mtrl_fast
from helpers import random_problem

jax = pytest.importorskip("jax")
mj = pytest.importorskip("mtrl_fast.jax")
jnp = jax.numpy
from jax.test_util import check_grads  # noqa: E402


@pytest.fixture(autouse=True)
def x64():
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


def _arrays(layout, loss="logistic", bias=True, dtype=np.float64):
    X, Y, W, b, A = random_problem(layout, dtype, n=12, d=4, m=6, T=3, bias=bias,
                                   labels="real" if loss == "squared" else "sign")
    return tuple(None if a is None else jnp.asarray(a) for a in (X, Y, W, b, A))


def _plain_loss(X, Y, W, b, A, name):
    Z = X @ W.T + (0 if b is None else b)
    H = jax.nn.relu(Z)
    F = A @ H.T if X.ndim == 2 else jnp.einsum("tnm,tm->tn", H, A)
    per_example = {"squared": lambda: 0.5 * (F - Y) ** 2, "logistic": lambda: jnp.logaddexp(0.0, -Y * F),
                   "hinge": lambda: jnp.maximum(0.0, 1.0 - Y * F), "correlation": lambda: -Y * F}[name]()
    return per_example.mean()


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("loss", mtrl_fast.LOSSES)
def test_check_grads_and_agreement_with_jax_autograd(layout, loss, bias):
    X, Y, W, b, A = _arrays(layout, loss, bias)
    check_grads(lambda W, b, A: mj.loss(X, Y, W, b, A, loss), (W, b, A), order=1, modes=["rev"])
    check_grads(lambda W, b, A: mj.forward(X, W, b, A), (W, b, A), order=1, modes=["rev"])
    value, ours = jax.jit(jax.value_and_grad(lambda W, b, A: mj.loss(X, Y, W, b, A, loss), argnums=(0, 1, 2)))(W, b, A)
    want_value, plain = jax.value_and_grad(lambda W, b, A: _plain_loss(X, Y, W, b, A, loss), argnums=(0, 1, 2))(W, b, A)
    assert float(value) == pytest.approx(float(want_value), rel=1e-10)
    for got, want in zip(ours, plain):
        if want is not None:
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_float32_without_x64():
    jax.config.update("jax_enable_x64", False)
    X, Y, W, b, A = _arrays("shared", dtype=np.float32)
    grads = jax.jit(jax.grad(lambda W: mj.loss(X, Y, W, b, A)))(W)
    assert grads.dtype == jnp.float32
    np.testing.assert_allclose(grads, jax.grad(lambda W: _plain_loss(X, Y, W, b, A, "logistic"))(W), rtol=1e-4,
                               atol=1e-6)


def test_vmap_over_heads(layout):
    X, Y, W, b, A = _arrays(layout)
    batched = jax.vmap(lambda A: mj.forward(X, W, b, A))(jnp.stack([A, 2 * A, -A]))
    for k, factor in enumerate((1, 2, -1)):
        np.testing.assert_allclose(batched[k], mj.forward(X, W, b, factor * A), rtol=1e-12)
    grads = jax.vmap(jax.grad(lambda A: mj.loss(X, Y, W, b, A)))(jnp.stack([A, 2 * A]))
    np.testing.assert_allclose(grads[1], jax.grad(lambda A: mj.loss(X, Y, W, b, A))(2 * A), rtol=1e-12)


def test_errors_at_trace_time():
    X, Y, W, b, A = _arrays("shared")
    with pytest.raises(ValueError, match="X must have shape"):
        jax.jit(lambda W: mj.forward(X[:, :-1], W, b, A))(W)
    with pytest.raises(TypeError, match="W has dtype float32"):
        mj.forward(X, W.astype(jnp.float32), b, A)
    with pytest.raises(ValueError, match="loss must be one of"):
        mj.loss(X, Y, W, b, A, "cross-entropy")
    with pytest.raises(ValueError, match="Y must have shape"):
        mj.loss(X, Y[:, :-1], W, b, A)
    with pytest.raises(TypeError, match="b must be an array"):
        mj.forward(X, W, [1.0, 2.0], A)
