"""mtrl_fast.jax: gradients under jit, grad and vmap, agreement with JAX's own autograd, errors."""

import numpy as np
import pytest

import mtrl_fast
from helpers import random_problem

jax = pytest.importorskip("jax")  # skip only when JAX itself is missing
import mtrl_fast.jax as mj  # noqa: E402  (an error of ours fails the module, never skips it)

jnp = jax.numpy
from jax.test_util import check_grads  # noqa: E402


@pytest.fixture(autouse=True)
def x64():
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


def _arrays(layout, loss="logistic", bias=True, dtype=np.float64):
    X, Y, W, b, A = random_problem(
        layout, dtype, n=12, d=4, m=6, T=3, bias=bias, labels="real" if loss == "squared" else "sign"
    )
    return tuple(None if a is None else jnp.asarray(a) for a in (X, Y, W, b, A))


def _plain_loss(X, Y, W, b, A, name):
    Z = X @ W.T + (0 if b is None else b)
    H = jax.nn.relu(Z)
    F = A @ H.T if X.ndim == 2 else jnp.einsum("tnm,tm->tn", H, A)
    per_example = {
        "squared": lambda: 0.5 * (F - Y) ** 2,
        "logistic": lambda: jnp.logaddexp(0.0, -Y * F),
        "hinge": lambda: jnp.maximum(0.0, 1.0 - Y * F),
        "correlation": lambda: -Y * F,
    }[name]()
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
    np.testing.assert_allclose(
        grads, jax.grad(lambda W: _plain_loss(X, Y, W, b, A, "logistic"))(W), rtol=1e-4, atol=1e-6
    )


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
    with pytest.raises(TypeError, match="W has dtype float32 but X has float64.*jax_enable_x64 is on"):
        mj.forward(X, W.astype(jnp.float32), b, A)
    with pytest.raises(ValueError, match="loss must be one of"):
        mj.loss(X, Y, W, b, A, "cross-entropy")
    with pytest.raises(ValueError, match="Y must have shape"):
        mj.loss(X, Y[:, :-1], W, b, A)
    with pytest.raises(TypeError, match="b must be an array"):
        mj.forward(X, W, [1.0, 2.0], A)


def test_labels_and_values_are_checked_before_the_callback():
    """Before: a bad label raised inside the callback, as ``JaxRuntimeError: INTERNAL``."""
    X, Y, W, b, A = _arrays("shared")
    bad = Y.at[0, 0].set(0.0)
    with pytest.raises(ValueError, match="labels -1 or \\+1"):
        mj.loss(X, bad, W, b, A)
    with pytest.raises(ValueError, match="labels -1 or \\+1"):  # Y closed over is concrete under grad
        jax.grad(lambda W: mj.loss(X, bad, W, b, A))(W)
    with pytest.raises(ValueError, match="X contains NaN"):
        mj.forward(X.at[0, 0].set(jnp.nan), W, b, A)
    assert not np.isfinite(float(mj.loss(X.at[0, 0].set(jnp.nan), Y, W, b, A, check_finite=False)))
    # Under jit the labels are tracers: not checked, as documented, and the callback does not raise.
    value = jax.jit(lambda Y: mj.loss(X, Y, W, b, A))(bad)
    assert np.isfinite(float(value))


def test_float64_numpy_inputs_without_x64_compute_in_float32():
    """Before: ``grad`` said "W has dtype float32 but X has float64" for all-float64 inputs."""
    jax.config.update("jax_enable_x64", False)
    X, Y, W, b, A = random_problem("per-task", np.float64, n=12, d=4, m=6, T=3)
    value = mj.loss(X, Y, W, b, A)
    grads = jax.grad(lambda W: mj.loss(X, Y, W, b, A))(W)
    assert value.dtype == jnp.float32 and grads.dtype == jnp.float32
    want = mtrl_fast.loss_and_grad(*(a.astype(np.float32) for a in (X, Y, W, b, A)))[1].W
    np.testing.assert_allclose(grads, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", ["int32", "int8"])
def test_integer_labels_are_taken_as_the_numpy_api_takes_them(dtype):
    """Before: ``AttributeError: 'ArrayMeta' object has no attribute 'astype'``."""
    X, Y, W, b, A = _arrays("shared")
    Y_int = Y.astype(dtype)
    assert mj.loss(X, Y_int, W, b, A) == mj.loss(X, Y, W, b, A)
    got = jax.jit(jax.grad(lambda W: mj.loss(X, Y_int, W, b, A)))(W)
    np.testing.assert_array_equal(got, jax.grad(lambda W: mj.loss(X, Y, W, b, A))(W))
    with pytest.raises(ValueError, match="labels -1 or \\+1"):
        mj.loss(X, (2 * Y).astype(dtype), W, b, A)


@pytest.mark.parametrize("loss", mtrl_fast.LOSSES)
def test_a_nan_in_W_reaches_its_gradients_under_jit(loss):
    """Before: under jit (no check of tracers) a NaN row of W gave a zero row of W's gradient."""
    X, Y, W, b, A = _arrays("per-task", loss=loss)
    W = W.at[1, 0].set(jnp.nan)
    value, (gW, gb, gA) = jax.jit(jax.value_and_grad(lambda *p: mj.loss(X, Y, *p, loss), argnums=(0, 1, 2)))(W, b, A)
    assert np.isnan(value)
    assert np.isnan(gW[1]).all() and np.isnan(gb[1]) and np.isnan(gA[:, 1]).all()
