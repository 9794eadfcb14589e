"""``gram=True``: ``D^T D`` of the pre-activations' gradients, against the reference, in every
layout, block split and loss; and nothing else changes when it is asked for."""

import numpy as np
import pytest

import mtrl_fast
from helpers import SIZES, assert_close, make_problem
from mtrl_fast import ops, reference


def _assert_gram_close(got, want, dtype):
    assert got.dtype == np.float64 and got.shape == want.shape
    np.testing.assert_allclose(got, got.T, rtol=0, atol=0)  # one product, symmetric bit for bit
    # |G_ij| <= sqrt(G_ii G_jj): the diagonal bounds every entry's summands.
    assert_close(got, want, dtype, scale=float(np.abs(np.diag(want)).max(initial=0.0)))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: "n{}-d{}-m{}-T{}".format(*s))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("loss", ["logistic", "correlation", "squared"])
def test_loss_and_grad_gram_matches_reference(layout, dtype, size, bias, loss):
    n, d, m, T = size
    problem = make_problem(layout, dtype, n, d, m, T, bias, labels="real" if loss == "squared" else "sign")
    value, grads = mtrl_fast.loss_and_grad(*problem, loss, gram=True)
    _, want = reference.loss_and_grad(*problem, loss, gram=True)
    _assert_gram_close(grads.gram, want.gram, dtype)
    plain_value, plain = mtrl_fast.loss_and_grad(*problem, loss)
    assert plain.gram is None and value == plain_value
    for got, expected in zip(grads, plain):  # the gradients are the same bits with or without it
        assert (got is None and expected is None) or np.array_equal(got, expected)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: "n{}-d{}-m{}-T{}".format(*s))
def test_backward_gram_matches_reference(layout, dtype, size):
    n, d, m, T = size
    X, _, W, b, A = make_problem(layout, dtype, n, d, m, T)
    dF = (np.random.default_rng(1).integers(-8, 9, size=(T, n)) / 8).astype(dtype)
    got = mtrl_fast.backward(X, W, b, A, dF, gram=True).gram
    _assert_gram_close(got, reference.backward(X, W, b, A, dF, gram=True).gram, dtype)


def test_shared_gram_is_that_of_the_summed_rows():
    """In the shared layout every task's terms add up in one row per example, so the Gram matrix is
    that of the sum, not the sum of the tasks' Gram matrices: ``grads.W = D^T X`` with that ``D``."""
    X, Y, W, b, A = make_problem("shared", np.float64, n=30, d=6, m=5, T=4)
    _, grads = mtrl_fast.loss_and_grad(X, Y, W, b, A, "logistic", gram=True)
    F = mtrl_fast.forward(X, W, b, A)
    dF = mtrl_fast.losses.slope("logistic", F, Y) / Y.size
    Z = X @ W.T + b
    D = sum(np.outer(dF[t], A[t]) for t in range(4)) * (Z > 0)
    np.testing.assert_allclose(D.T @ X, grads.W, rtol=1e-12)
    np.testing.assert_allclose(D.T @ D, grads.gram, rtol=1e-12)


@pytest.mark.parametrize("block_bytes", [64, 1000])
def test_per_task_gram_over_small_blocks(dtype, block_bytes, monkeypatch):
    """Blocks ending mid-task add up to the reference's Gram matrix."""
    problem = make_problem("per-task", dtype, n=53, d=6, m=8, T=5)
    monkeypatch.setattr(ops, "BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(ops, "BLOCK_MIN_BYTES", block_bytes)
    assert ops._block_rows(ops.check_problem(*problem[:1], *problem[2:])) < 53 * 5
    _, grads = mtrl_fast.loss_and_grad(*problem, "hinge", gram=True)
    _assert_gram_close(grads.gram, reference.loss_and_grad(*problem, "hinge", gram=True)[1].gram, dtype)


@pytest.mark.parametrize("api", [mtrl_fast, reference], ids=["kernels", "reference"])
def test_gram_needs_the_first_layer(api):
    with pytest.raises(ValueError, match="gram=True needs first_layer=True"):
        api.loss_and_grad(*make_problem(), gram=True, first_layer=False)


def test_gradients_with_gram_still_unpack_as_three_and_pickle_whole():
    import pickle

    _, grads = mtrl_fast.loss_and_grad(*make_problem(), gram=True)
    W, b, A = grads
    assert len(grads) == 3 and W is grads.W
    again = pickle.loads(pickle.dumps(grads))
    assert np.array_equal(again.gram, grads.gram) and np.array_equal(again.W, W)
