"""Properties over random shapes, layouts, dtypes and losses (hypothesis)."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import mtrl_fast
from helpers import assert_close, assert_grads_close, gradient_scales, make_problem
from mtrl_fast import reference

problems = st.fixed_dictionaries(
    {
        "layout": st.sampled_from(["shared", "per-task"]),
        "dtype": st.sampled_from([np.float32, np.float64]),
        "n": st.integers(1, 40),
        "d": st.integers(1, 12),
        "m": st.integers(1, 12),
        "T": st.integers(1, 40),
        "bias": st.booleans(),
        "seed": st.integers(0, 2**32 - 1),
        "loss": st.sampled_from(mtrl_fast.LOSSES),
    }
)


def _build(case):
    labels = "real" if case["loss"] == "squared" else "sign"
    return make_problem(
        case["layout"],
        case["dtype"],
        case["n"],
        case["d"],
        case["m"],
        case["T"],
        case["bias"],
        case["seed"],
        labels=labels,
    )


@given(problems)
def test_matches_reference(case):
    X, Y, W, b, A = _build(case)
    value, grads = mtrl_fast.loss_and_grad(X, Y, W, b, A, case["loss"])
    ref_value, ref_grads = reference.loss_and_grad(X, Y, W, b, A, case["loss"])
    assert abs(value - ref_value) <= 1e-5 * max(1.0, abs(ref_value))
    assert_grads_close(grads, ref_grads, (X, Y, W, b, A), case["loss"], case["dtype"])
    assert_close(mtrl_fast.forward(X, W, b, A), reference.forward(X, W, b, A), case["dtype"])


@given(problems)
def test_objective_is_the_mean_of_the_task_objectives(case):
    """Each task alone (T = 1) gives its own mean loss; the joint objective is their mean, and the
    joint gradients are the task gradients divided by T."""
    X, Y, W, b, A = _build(case)
    T = case["T"]
    scales = gradient_scales((X, Y, W, b, A), case["loss"])
    value, grads = mtrl_fast.loss_and_grad(X, Y, W, b, A, case["loss"])
    task_values, task_grads_W = [], []
    for t in range(T):
        X_t = X if case["layout"] == "shared" else X[t : t + 1]
        v, g = mtrl_fast.loss_and_grad(X_t, Y[t : t + 1], W, b, A[t : t + 1], case["loss"])
        task_values.append(v)
        task_grads_W.append(g.W.astype(np.float64))
        assert_close(g.A[0] / T, grads.A[t], case["dtype"], scale=scales["A"] / T)
    assert abs(value - np.mean(task_values)) <= 1e-5 * max(1.0, abs(value))
    assert_close(grads.W, np.mean(task_grads_W, axis=0), case["dtype"], scale=scales["W"])


@given(problems, st.integers(-4, 4))
def test_outputs_are_linear_in_the_heads_and_positively_homogeneous_in_W_b(case, power):
    X, _, W, b, A = _build(case)
    F = mtrl_fast.forward(X, W, b, A)
    scale = case["dtype"](2.0) ** power  # powers of two keep every product exact
    assert_close(mtrl_fast.forward(X, W, b, scale * A), scale * F, case["dtype"])
    scaled_b = None if b is None else scale * b
    assert_close(mtrl_fast.forward(X, scale * W, scaled_b, A), scale * F, case["dtype"])
