"""The compiled scalar losses against the NumPy definitions, and their numerical stability."""

import numpy as np
import pytest

from mtrl_fast import losses
from mtrl_fast._kernels import _losses, _math

F_VALUES = np.array([-800.0, -40.0, -3.0, -1.0, -0.25, 0.0, 0.25, 0.999, 1.0, 1.001, 3.0, 40.0, 800.0])


@pytest.mark.parametrize("name, y", [(name, y) for name in losses.LOSSES for y in (-1.0, 1.0)] + [("squared", 0.3)])
def test_kernel_twin_matches_numpy_definition(name, y):
    got = np.array([_losses._loss_value_and_slope(losses.LOSSES.index(name), f, y) for f in F_VALUES])
    np.testing.assert_allclose(got[:, 0], losses.value(name, F_VALUES, y), rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(got[:, 1], losses.slope(name, F_VALUES, y), rtol=1e-14, atol=1e-300)
    assert np.isfinite(got).all()


def test_definitions():
    f = np.array([-2.0, 0.5, 3.0])
    y = np.array([1.0, -1.0, 1.0])
    np.testing.assert_allclose(losses.value("squared", f, y), 0.5 * (f - y) ** 2)
    np.testing.assert_allclose(losses.value("logistic", f, y), np.log1p(np.exp(-y * f)))
    np.testing.assert_allclose(losses.slope("logistic", f, y), -y / (1 + np.exp(y * f)))
    np.testing.assert_array_equal(losses.value("hinge", f, y), [3.0, 1.5, 0.0])
    np.testing.assert_array_equal(losses.slope("hinge", f, y), [-1.0, 1.0, 0.0])
    np.testing.assert_array_equal(losses.value("correlation", f, y), -y * f)
    np.testing.assert_array_equal(losses.slope("correlation", f, y), -y)


@pytest.mark.parametrize("name", losses.LOSSES)
def test_slope_is_the_derivative(name):
    f = np.array([-2.3, -0.4, 0.35, 1.7])  # away from the hinge kink at y f = 1
    y = np.array([1.0, -1.0, 1.0, -1.0])
    h = 1e-6
    numeric = (losses.value(name, f + h, y) - losses.value(name, f - h, y)) / (2 * h)
    np.testing.assert_allclose(losses.slope(name, f, y), numeric, rtol=1e-7, atol=1e-9)


def test_unknown_loss():
    with pytest.raises(ValueError, match="loss must be one of"):
        losses.loss_id("mse")
    with pytest.raises(ValueError, match="loss must be one of"):
        losses.value("mse", 1.0, 1.0)


@pytest.mark.parametrize("name", losses.LOSSES)
def test_kernel_twin_propagates_nan_and_handles_infinite_outputs(name):
    loss = losses.LOSSES.index(name)
    value, slope = _losses._loss_value_and_slope(loss, np.nan, 1.0)
    assert np.isnan(value)
    assert np.isnan(slope) == (name in ("squared", "logistic"))  # hinge and correlation slopes are -y
    if name == "logistic":
        assert (
            _losses._loss_value_and_slope(loss, np.inf, 1.0) == (0.0, 0.0)
            or _losses._loss_value_and_slope(loss, np.inf, 1.0)[0] < 1e-300
        )
        assert _losses._loss_value_and_slope(loss, -np.inf, 1.0) == (np.inf, -1.0)


def test_polynomial_exp_and_log1p_match_libm():
    """The vectorisable exp(-x) and log1p(e) used by the logistic loss, over their whole ranges."""
    xs = np.concatenate([np.linspace(0.0, 50.0, 20001), np.logspace(-12, np.log10(700), 2000)])
    got = np.array([_math._exp_neg(x) for x in xs])
    np.testing.assert_allclose(got, np.exp(-xs), rtol=5e-14)
    assert _math._exp_neg(745.0) < 1e-323 and _math._exp_neg(1e300) == 0.0
    es = np.concatenate([np.linspace(0.0, 1.0, 20001), np.logspace(-300, 0, 600)])
    got = np.array([_math._log1p_unit(e) for e in es])
    np.testing.assert_allclose(got, np.log1p(es), rtol=2e-15, atol=0)


@pytest.mark.parametrize("name, y", [(name, y) for name in losses.LOSSES for y in (-1.0, 1.0)])
def test_float32_twin_matches_numpy_definition(name, y):
    """Kernels on float32 arrays evaluate the loss in float32, to float32 accuracy."""
    f32 = F_VALUES.astype(np.float32)
    got = np.array([_losses._loss_value_and_slope(losses.LOSSES.index(name), f, np.float32(y)) for f in f32])
    assert np.isfinite(got).all()
    want_value = losses.value(name, f32.astype(np.float64), y)
    want_slope = losses.slope(name, f32.astype(np.float64), y)
    np.testing.assert_allclose(got[:, 0], want_value, rtol=4e-7, atol=1e-37)
    np.testing.assert_allclose(got[:, 1], want_slope, rtol=4e-7, atol=1e-37)


def test_float32_twin_propagates_nan():
    for loss in range(len(losses.LOSSES)):
        value, slope = _losses._loss_value_and_slope(loss, np.float32(np.nan), np.float32(1.0))
        assert np.isnan(value)
    value, slope = _losses._loss_value_and_slope(losses.loss_id("logistic"), np.float32(np.nan), np.float32(-1.0))
    assert np.isnan(slope)


def test_float32_polynomial_exp_and_log1p_match_libm():
    xs = np.concatenate([np.linspace(0.0, 30.0, 20001), np.logspace(-8, np.log10(87), 2000)]).astype(np.float32)
    got = np.array([_math._exp_neg32(x) for x in xs], dtype=np.float64)
    np.testing.assert_allclose(got, np.exp(-xs.astype(np.float64)), rtol=3e-7)
    tiny = np.array([_math._exp_neg32(np.float32(x)) for x in (90.0, 103.0, 104.0, 1e30)])
    # subnormal results, to within a unit of the last place there (1.4e-45)
    np.testing.assert_allclose(tiny[:2], np.exp(-np.array([90.0, 103.0])).astype(np.float32), rtol=1e-4, atol=1.5e-45)
    assert tiny[2] < 1e-44 and tiny[3] == 0.0
    es = np.concatenate([np.linspace(0.0, 1.0, 20001), np.logspace(-38, 0, 600)]).astype(np.float32)
    got = np.array([_math._log1p_unit32(e) for e in es], dtype=np.float64)
    np.testing.assert_allclose(got, np.log1p(es.astype(np.float64)), rtol=3e-7, atol=0)


def test_the_table_is_the_one_list_of_losses():
    """Names, kernel codes (each row's own), label kinds and costs all come from ``losses.TABLE``;
    the kernels' internal code for an upstream gradient lies outside the codes."""
    assert losses.LOSSES == tuple(row.name for row in losses.TABLE)
    assert [losses.loss_id(row.name) for row in losses.TABLE] == [row.code for row in losses.TABLE]
    assert (_losses.SQUARED, _losses.LOGISTIC, _losses.HINGE, _losses.CORRELATION) == (0, 1, 2, 3)  # stable ids
    assert _losses.UPSTREAM not in [row.code for row in losses.TABLE]
    assert all(losses.by_code(row.code) is row for row in losses.TABLE)
    assert losses.CLASSIFICATION_LOSSES == {"logistic", "hinge", "correlation"}
    assert _losses.loss_cost(_losses.LOGISTIC, np.float32) == losses.loss("logistic").cost[0]


def test_a_loss_without_a_kernel_branch_is_named():
    """A new row of the table would otherwise fall through to the correlation's branch."""
    from dataclasses import replace

    mse = replace(losses.loss("squared"), name="mse", code=7)
    assert _losses.unbranched((*losses.TABLE, mse)) == ["mse"] and _losses.unbranched(losses.TABLE) == []


@pytest.mark.parametrize("loss_id", [len(losses.TABLE), -2])
def test_an_id_outside_the_table_is_refused_never_another_loss(loss_id):
    """The names are checked before compiled code (``losses.loss_id``); the Python twin checks ids."""
    with pytest.raises(ValueError, match="no loss has id"):
        _losses._loss_value_and_slope(loss_id, np.float64(0.5), 1.0)


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_the_frameworks_run_the_tables_formulas(framework):
    f = np.array([-3.0, -0.5, 0.25, 0.999, 2.0, 40.0])
    y = np.array([1.0, -1.0, 1.0, 1.0, -1.0, -1.0])
    if framework == "torch":
        torch = pytest.importorskip("torch")
        from mtrl_fast.torch import plain_losses

        run = lambda name: plain_losses(name, torch.tensor(f), torch.tensor(y)).numpy()  # noqa: E731
    else:
        jnp = pytest.importorskip("jax.numpy")
        from mtrl_fast.bench.peers.jax import example_losses

        f32, y32 = jnp.asarray(f, jnp.float32), jnp.asarray(y, jnp.float32)  # as JAX computes unless x64 is on
        run = lambda name: np.asarray(example_losses(name, f32, y32))  # noqa: E731
    for name in losses.LOSSES:
        tolerance = 1e-12 if framework == "torch" else 1e-6
        np.testing.assert_allclose(run(name), losses.value(name, f, y), rtol=tolerance, atol=tolerance, err_msg=name)
    with pytest.raises(ValueError, match="loss must be one of"):
        run("mse")
