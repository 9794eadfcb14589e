"""A NaN or Inf in the inputs or parameters reaches every gradient it touches (check_finite=False)."""

import numpy as np
import pytest

import mtrl_fast
from helpers import make_problem
from mtrl_fast import reference

POISONS = {
    "NaN in a row of W": ("W", (1, 0), np.nan),
    "NaN in b": ("b", (1,), np.nan),
    "NaN in a head": ("A", (0, 1), np.nan),
    "NaN in an input": ("X", None, np.nan),
}


def _poisoned(layout, dtype, loss, case):
    X, Y, W, b, A = make_problem(layout, dtype, n=40, d=5, m=4, T=6, labels="real" if loss == "squared" else "sign")
    name, index, value = POISONS[case]
    arrays = {"X": X, "W": W, "b": b, "A": A}
    if name == "X":
        index = (2, 0) if layout == "shared" else (1, 2, 0)
    arrays[name][index] = value
    return X, Y, W, b, A


@pytest.mark.parametrize("case", POISONS)
@pytest.mark.parametrize("loss", mtrl_fast.LOSSES)
def test_a_nan_reaches_what_it_touches_as_in_the_reference(layout, dtype, loss, case):
    """Before: a NaN row of W gave a zero row of ``grads.W`` (the mask read ``NaN > 0`` as false)."""
    args = _poisoned(layout, dtype, loss, case)
    value, grads = mtrl_fast.loss_and_grad(*args, loss, check_finite=False)
    ref_value, ref = reference.loss_and_grad(*args, loss, check_finite=False)
    assert np.isnan(value) and np.isnan(ref_value)
    for got, want in zip(grads[:3], ref[:3]):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    name, _, _ = POISONS[case]
    if name in ("W", "b"):  # the neuron's own gradients, whatever the loss
        assert np.isnan(grads.W[1]).all() and np.isnan(grads.b[1]) and np.isnan(grads.A[:, 1]).all()
    if name == "X":  # one example's NaN pre-activations reach every neuron
        assert np.isnan(grads.W).all() and np.isnan(grads.b).all()


@pytest.mark.parametrize("case", POISONS)
def test_backward_propagates_a_nan_too(layout, dtype, case):
    X, Y, W, b, A = _poisoned(layout, dtype, "squared", case)
    grads = mtrl_fast.backward(X, W, b, A, np.ones_like(Y), check_finite=False)
    ref = reference.backward(X, W, b, A, np.ones_like(Y), check_finite=False)
    for got, want in zip(grads[:3], ref[:3]):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(grads.W).any()


@pytest.mark.parametrize("loss", ["correlation", "squared"])
def test_an_inf_in_W_reaches_what_it_touches_as_in_the_reference(layout, dtype, loss):
    """relu(+Inf) = Inf has slope 1: the heads' gradient of that neuron is not finite, and the rest
    follows the reference (the other losses' slopes at an infinite output differ by convention)."""
    X, Y, W, b, A = make_problem(layout, dtype, n=40, d=5, m=4, T=6, labels="real" if loss == "squared" else "sign")
    W[1, 0] = np.inf
    value, grads = mtrl_fast.loss_and_grad(X, Y, W, b, A, loss, check_finite=False)
    ref_value, ref = reference.loss_and_grad(X, Y, W, b, A, loss, check_finite=False)
    assert not np.isfinite(value) and not np.isfinite(ref_value)
    for got, want in zip(grads[:3], ref[:3]):
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
    assert not np.isfinite(grads.A[:, 1]).all()
