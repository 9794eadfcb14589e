"""Head steps (first_layer=False) and the alternating round built on them."""

import numpy as np
import pytest

import mtrl_fast
from helpers import make_problem
from mtrl_fast import reference


@pytest.mark.parametrize("api", [mtrl_fast, reference], ids=["kernels", "reference"])
@pytest.mark.parametrize("bias", [True, False])
def test_a_head_step_gives_the_full_steps_value_and_heads_gradient(api, layout, dtype, bias):
    args = make_problem(layout, dtype, n=9, d=5, m=4, T=3, bias=bias)
    value, full = api.loss_and_grad(*args)
    head_value, head = api.loss_and_grad(*args, first_layer=False)
    assert head_value == value
    np.testing.assert_array_equal(head.A, full.A)
    assert head.W is None and head.b is None


def test_a_head_step_skips_the_first_layers_product(layout):
    args = make_problem(layout, np.float64, n=9, d=5, m=4, T=3)
    with mtrl_fast.ops.record_products() as full:
        mtrl_fast.loss_and_grad(*args)
    with mtrl_fast.ops.record_products() as head:
        mtrl_fast.loss_and_grad(*args, first_layer=False)
    assert len(head) == len(full) - (2 if layout == "shared" and args[4].shape[0] > 4 else 1)


@pytest.mark.parametrize("bias", [True, False])
def test_alternating_round_is_head_steps_then_a_first_layer_step(layout, bias):
    X, Y, W, b, A = make_problem(layout, np.float64, n=20, d=6, m=5, T=3, bias=bias, labels="real")
    settings = dict(loss="squared", head_steps=2, head_lr=0.3, lr=0.5, weight_decay=0.1)
    W1, b1, A1 = W.copy(), None if b is None else b.copy(), A.copy()
    value = mtrl_fast.alternating_round((X, Y), (2 * X, Y), W1, b1, A1, **settings)

    A2 = A.copy()
    for _ in range(2):  # each task's own mean loss: T times the task-averaged gradient
        A2 -= 0.3 * 3 * reference.loss_and_grad(X, Y, W, b, A2, "squared")[1].A
    expected_value, grads = reference.loss_and_grad(2 * X, Y, W, b, A2, "squared")
    np.testing.assert_allclose(A1, A2, rtol=1e-12)
    np.testing.assert_allclose(W1, (1 - 0.05) * W - 0.5 * grads.W, rtol=1e-12, atol=1e-15)
    if bias:
        np.testing.assert_allclose(b1, b - 0.5 * grads.b, rtol=1e-12, atol=1e-15)
    assert value == pytest.approx(expected_value, rel=1e-12)


def _nan_at_the_end(array):
    array = array.copy()
    array.flat[-1] = np.nan
    return array


def _read_only(array):
    array = array.copy()
    array.flags.writeable = False
    return array


REFUSED_ROUNDS = {
    "NaN in the head batch's X": lambda X, Y, W, b, A: (((_nan_at_the_end(X), Y), (X, Y), W, b, A), {}),
    "NaN in the layer batch's X": lambda X, Y, W, b, A: (((X, Y), (_nan_at_the_end(X), Y), W, b, A), {}),
    "Inf in the layer batch's Y": lambda X, Y, W, b, A: (((X, Y), (X, np.full_like(Y, np.inf)), W, b, A), {}),
    "a label outside -1, +1": lambda X, Y, W, b, A: (((X, Y), (X, 2 * Y), W, b, A), {"loss": "logistic"}),
    "a layer batch of the wrong width": lambda X, Y, W, b, A: (((X, Y), (X[..., :-1], Y), W, b, A), {}),
    "a read-only W": lambda X, Y, W, b, A: (((X, Y), (X, Y), _read_only(W), b, A), {}),
    "a read-only A": lambda X, Y, W, b, A: (((X, Y), (X, Y), W, b, _read_only(A)), {}),
    "a read-only b": lambda X, Y, W, b, A: (((X, Y), (X, Y), W, _read_only(b), A), {}),
    "a list for A": lambda X, Y, W, b, A: (((X, Y), (X, Y), W, b, A.tolist()), {}),
    "negative head steps": lambda X, Y, W, b, A: (((X, Y), (X, Y), W, b, A), {"head_steps": -1}),
    "a NaN step size": lambda X, Y, W, b, A: (((X, Y), (X, Y), W, b, A), {"lr": float("nan")}),
    "an unknown loss": lambda X, Y, W, b, A: (((X, Y), (X, Y), W, b, A), {"loss": "hinges"}),
}


@pytest.mark.parametrize("case", REFUSED_ROUNDS)
def test_a_refused_round_applies_nothing(layout, case):
    """Every check runs before the first update: the parameters are bit for bit as they were."""
    X, Y, W, b, A = make_problem(layout, np.float64, n=8, d=5, m=4, T=3)
    A += 0.25  # nonzero heads, so that a head step would change them
    args, settings = REFUSED_ROUNDS[case](X, Y, W, b, A)
    params = args[2:]
    before = [np.array(p, copy=True) for p in params]
    with pytest.raises((ValueError, TypeError)):
        mtrl_fast.alternating_round(*args, **settings)
    for p, original in zip(params, before):
        np.testing.assert_array_equal(np.asarray(p), original, strict=True)
