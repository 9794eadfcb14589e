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


# --- the call path: XLA's FFI custom call, or the host callback ---------------------------------

from mtrl_fast import _xla_ffi  # noqa: E402


def _loss_step(X, Y, b, A, loss="logistic"):
    return jax.jit(jax.value_and_grad(lambda W, b, A: mj.loss(X, Y, W, b, A, loss), argnums=(0, 1, 2)))


def _lowered(X, Y, W, b, A):
    return jax.jit(lambda W: mj.loss(X, Y, W, b, A)).lower(W).as_text()


def test_the_ffi_custom_call_is_the_path_where_xla_supports_it():
    version, reason = _xla_ffi.probe()
    assert hasattr(jax, "ffi") and version in _xla_ffi.SUPPORTED_VERSIONS, (version, reason)
    assert mj.call_path() == f"ffi (XLA FFI API {version[0]}.{version[1]})"
    X, Y, W, b, A = _arrays("shared")
    text = _lowered(X, Y, W, b, A)
    assert "mtrl_fast_loss_logistic" in text and "callback" not in text


def test_forced_callback_gives_the_same_bits(monkeypatch, layout):
    """Both paths run the same step on the same arrays: values and gradients bit for bit."""
    X, Y, W, b, A = _arrays(layout)
    on_ffi = _loss_step(X, Y, b, A)(W, b, A)
    monkeypatch.setenv("MTRL_FAST_JAX_CALLBACK", "1")
    assert mj.call_path() == "callback: MTRL_FAST_JAX_CALLBACK=1"
    text = _lowered(X, Y, W, b, A)
    assert "mtrl_fast_loss" not in text and "callback" in text
    on_callback = _loss_step(X, Y, b, A)(W, b, A)
    for got, want in zip(jax.tree_util.tree_leaves(on_callback), jax.tree_util.tree_leaves(on_ffi)):
        np.testing.assert_array_equal(got, want)
    dF = jnp.ones((A.shape[0], X.shape[-2]))
    grads_cb = jax.grad(lambda W, b, A: jnp.vdot(mj.forward(X, W, b, A), dF), argnums=(0, 1, 2))(W, b, A)
    monkeypatch.delenv("MTRL_FAST_JAX_CALLBACK")
    grads_ffi = jax.grad(lambda W, b, A: jnp.vdot(mj.forward(X, W, b, A), dF), argnums=(0, 1, 2))(W, b, A)
    for got, want in zip(grads_cb, grads_ffi):
        np.testing.assert_array_equal(got, want)


@pytest.fixture
def fresh_probe(monkeypatch):
    """The probe and the path decision forgotten, and forgotten again afterwards."""

    def forget():
        _xla_ffi.probe.cache_clear()
        mj._probe_refusal.cache_clear()
        _xla_ffi._REGISTERED.pop("mtrl_fast_probe", None)

    forget()
    yield monkeypatch
    forget()


def test_an_unsupported_ffi_version_falls_back_with_one_warning(fresh_probe):
    fresh_probe.setattr(_xla_ffi, "SUPPORTED_VERSIONS", ((0, 0),))
    X, Y, W, b, A = _arrays("shared")
    with pytest.warns(mj.FFIFallbackWarning, match="FFI API version .* is not one this package reads"):
        value = mj.loss(X, Y, W, b, A)
    assert mj.call_path().startswith("callback: the FFI probe failed")
    assert "callback" in _lowered(X, Y, W, b, A)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one warning per process, not one per call
        assert float(mj.loss(X, Y, W, b, A)) == float(value)
    assert float(value) == pytest.approx(float(_plain_loss(X, Y, W, b, A, "logistic")), rel=1e-12)


def test_the_handler_reports_a_bad_call_as_an_error_not_a_crash():
    """A custom call whose operands do not fit (only reachable by calling the target directly, since
    the ops check shapes when they are traced) raises the step's own message from XLA."""
    X, Y, W, b, A = _arrays("shared")
    mj.loss(X, Y, W, b, A)  # registers the targets
    mj.forward(X, W, b, A)
    structs = [jax.ShapeDtypeStruct((), X.dtype), jax.ShapeDtypeStruct(W.shape, X.dtype)]
    structs += [jax.ShapeDtypeStruct(b.shape, X.dtype), jax.ShapeDtypeStruct(A.shape, X.dtype)]
    with pytest.raises(Exception, match="INVALID_ARGUMENT: ValueError: X must have shape"):
        target = "mtrl_fast_loss_logistic" + mj._settings.Settings.here().suffix()
        jax.jit(lambda W: _xla_ffi.call(target, structs, [X, Y, W, b, A], "sequential"))(W[:, :-1])
    ints = [jax.ShapeDtypeStruct((2,), jnp.int32)]
    with pytest.raises(Exception, match="INVALID_ARGUMENT: FFIError: operand 0 must be float32 or float64"):
        forward = "mtrl_fast_forward" + mj._settings.Settings.here().suffix()
        jax.jit(lambda x: _xla_ffi.call(forward, ints, [x, x, x, x], "sequential"))(jnp.ones(2, jnp.int32))

    def broken(operands, results):
        raise RuntimeError("a bug in the work")

    _xla_ffi.register("mtrl_fast_test_broken", broken)
    with pytest.raises(Exception, match="INTERNAL: RuntimeError: a bug in the work"):
        jax.jit(
            lambda x: _xla_ffi.call("mtrl_fast_test_broken", [jax.ShapeDtypeStruct((1,), x.dtype)], [x], "sequential")
        )(jnp.ones(1))
    assert float(mj.loss(X, Y, W, b, A)) == pytest.approx(float(_plain_loss(X, Y, W, b, A, "logistic")), rel=1e-12)


def test_concurrent_jitted_calls_from_several_threads(layout):
    """XLA may run the handler from several threads at once: each call gets its own problem's result."""
    from concurrent.futures import ThreadPoolExecutor

    problems = [random_problem(layout, np.float64, n=40 + 8 * k, d=6, m=5, T=3, seed=k) for k in range(6)]
    steps = {}

    def run(k):
        X, Y, W, b, A = (jnp.asarray(a) for a in problems[k])
        step = steps.setdefault(k, _loss_step(X, Y, b, A))
        return [np.asarray(leaf) for _ in range(8) for leaf in jax.tree_util.tree_leaves(step(W, b, A))][-4:]

    serial = [run(k) for k in range(len(problems))]
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(run, [k for _ in range(3) for k in range(len(problems))]))
    for k, got in enumerate(concurrent):
        for a, b_ in zip(got, serial[k % len(problems)]):
            np.testing.assert_array_equal(a, b_)


def test_the_first_op_traced_inside_jit_still_takes_the_ffi_path(tmp_path):
    """Before: the probe ran a nested ``jit`` inside the user's trace, which staged it instead of
    running it, and the ops fell back to the callback with a warning."""
    import subprocess
    import sys

    script = (
        "import warnings; warnings.simplefilter('error')\n"
        "import jax, jax.numpy as jnp, mtrl_fast.jax as mj\n"
        "X, Y = jnp.ones((8, 3)), jnp.ones((2, 8))\n"
        "print(float(jax.jit(lambda W, A: mj.loss(X, Y, W, None, A))(jnp.ones((4, 3)), jnp.ones((2, 4)))))\n"
        "print(mj.call_path())\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "MTRL_FAST_JAX_CALLBACK"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("ffi (XLA FFI API"), done.stdout


def test_info_says_which_path_the_ops_take(capsys):
    info = mtrl_fast.show_config()
    assert info["jax_op"] == mj.call_path()
    assert f"jax_op: {mj.call_path()}" in capsys.readouterr().out


def test_the_benchmark_times_both_paths_the_direct_call_and_plain_jax(monkeypatch):
    """``mtrl_fast.bench.jax_op``: each path really traced on its own (the callback's trace leaves
    the environment as it found it), four medians per shape."""
    from mtrl_fast.bench import jax_op

    traced = []
    real_call = mj._call
    monkeypatch.setattr(mj, "_call", lambda *args: traced.append(mj._ffi_refusal()) or real_call(*args))
    (medians,) = jax_op.measure([("per-task", 16, 4, 3, 2)], rounds=1)
    assert sorted(medians) == ["callback", "direct", "ffi", "ffi_noop", "plain"]
    assert all(seconds > 0 for seconds in medians.values())
    assert traced == ["", "MTRL_FAST_JAX_CALLBACK=1"]
    assert "MTRL_FAST_JAX_CALLBACK" not in __import__("os").environ
