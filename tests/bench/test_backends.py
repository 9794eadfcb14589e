"""Every backend computes the same objective and gradients as the reference."""

import sys

import numpy as np
import pytest

import mtrl_fast
from helpers import assert_close, assert_grads_close, make_problem
from mtrl_fast import reference
from mtrl_fast.bench import backends

INSTALLED = [name for name in backends.BACKENDS if backends.get(name).available()[0]]


@pytest.mark.parametrize("name", INSTALLED)
@pytest.mark.parametrize("loss", mtrl_fast.LOSSES)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_backend_agrees_with_reference(name, layout, dtype, loss, bias):
    problem = make_problem(
        layout, dtype, n=23, d=7, m=9, T=5, bias=bias, labels="real" if loss == "squared" else "sign"
    )
    step = backends.get(name).prepare(*problem, loss)
    step.run()
    value, grads = step.result()
    ref_value, ref_grads = reference.loss_and_grad(*problem, loss)
    assert value == pytest.approx(ref_value, rel=1e-5 if dtype == np.float32 else 1e-12)
    assert_grads_close(mtrl_fast.Gradients(*grads), ref_grads, problem, loss, dtype)


@pytest.mark.parametrize("name", INSTALLED)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_backend_round_agrees_with_the_reference_round(name, layout, dtype, bias):
    """A training round (head steps on A, then W and b with weight decay) in every backend."""
    problem = make_problem(layout, dtype, n=23, d=7, m=9, T=5, bias=bias)
    step = backends.get(name).prepare_round(*problem, "logistic")
    step.run()
    step.run()  # each run starts from the same parameters
    value, params = step.result()
    ref_value, ref_params = backends.round_step(reference.loss_and_grad, *problem, "logistic").run()
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert value == pytest.approx(ref_value, rel=rtol)
    for got, want in zip(params, ref_params):
        assert (got is None) == (want is None)
        if want is not None:
            np.testing.assert_allclose(np.asarray(got), want, rtol=rtol, atol=rtol * float(np.abs(want).max()))
    assert np.array_equal(problem[2], make_problem(layout, dtype, n=23, d=7, m=9, T=5, bias=bias)[2])  # W untouched


def test_all_backends_are_known():
    assert set(backends.PEERS) < set(backends.BACKENDS)
    with pytest.raises(ValueError, match="backend must be one of"):
        backends.get("tensorflow")


@pytest.mark.parametrize("name, module", [("torch", "torch"), ("jax", "jax")])
def test_missing_peer_says_how_to_install(name, module, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    ok, why = backends.get(name).available()
    assert not ok
    assert "not installed" in why and "mtrl_fast[peers]" in why


def test_numpy_peer_is_independent_of_the_kernels():
    """The NumPy peer checks the large shapes the reference is too slow for: it must not call ours."""
    import inspect

    from mtrl_fast.bench.backends import _numpy

    source = inspect.getsource(_numpy)
    assert "kernels" not in source and "ops" not in source
    X, Y, W, b, A = make_problem("shared", np.float64, n=30, d=6, m=8, T=4)
    value, grads = _numpy.loss_and_grad(X, Y, W, b, A, "hinge")
    ref_value, ref_grads = reference.loss_and_grad(X, Y, W, b, A, "hinge")
    assert value == pytest.approx(ref_value)
    assert_close(grads.W, ref_grads.W, np.float64)
