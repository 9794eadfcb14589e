"""Every public function against the plain NumPy reference."""

import numpy as np
import pytest

import mtrl_fast
from helpers import RTOL, SIZES, assert_close, assert_grads_close, make_problem
from mtrl_fast import Gradients, ops, reference


def _labels_for(loss):
    return "real" if loss == "squared" else "sign"


@pytest.mark.parametrize("size", SIZES, ids=lambda s: "n{}-d{}-m{}-T{}".format(*s))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_forward(layout, dtype, size, bias):
    n, d, m, T = size
    X, _, W, b, A = make_problem(layout, dtype, n, d, m, T, bias)
    F = mtrl_fast.forward(X, W, b, A)
    assert F.dtype == dtype and F.shape == (T, n)
    assert_close(F, reference.forward(X, W, b, A), dtype)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: "n{}-d{}-m{}-T{}".format(*s))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("loss", mtrl_fast.LOSSES)
def test_loss_and_grad(layout, dtype, size, bias, loss):
    n, d, m, T = size
    X, Y, W, b, A = make_problem(layout, dtype, n, d, m, T, bias, labels=_labels_for(loss))
    value, grads = mtrl_fast.loss_and_grad(X, Y, W, b, A, loss)
    ref_value, ref_grads = reference.loss_and_grad(X, Y, W, b, A, loss)
    assert isinstance(value, float)
    np.testing.assert_allclose(value, ref_value, rtol=10 * RTOL[dtype])
    assert_grads_close(grads, ref_grads, (X, Y, W, b, A), loss, dtype)
    assert (grads.b is None) == (not bias)


@pytest.mark.parametrize("block_bytes", [64, 1000, 4096])
def test_per_task_blocks_split_tasks_anywhere(dtype, block_bytes, monkeypatch):
    """Blocks far smaller than a task, or ending mid-task, give the unblocked result."""
    X, Y, W, b, A = make_problem("per-task", dtype, n=53, d=6, m=8, T=5)
    expected = mtrl_fast.loss_and_grad(X, Y, W, b, A)
    expected_F = mtrl_fast.forward(X, W, b, A)
    monkeypatch.setattr(ops, "BLOCK_BYTES", block_bytes)
    assert ops._block_rows(ops.check_problem(X, W, b, A)) < 53 * 5
    value, grads = mtrl_fast.loss_and_grad(X, Y, W, b, A)
    np.testing.assert_allclose(value, expected[0], rtol=1e-5)
    assert_grads_close(grads, expected[1], (X, Y, W, b, A), "logistic", dtype)
    assert_close(mtrl_fast.forward(X, W, b, A), expected_F, dtype)


def test_per_task_default_blocked_path():
    """A per-task case larger than one 64 MiB block, at the real block size."""
    n, d, m, T = 45_000, 3, 64, 3  # 135,000 rows x 64 x 8 bytes = 66 MiB of pre-activations
    X, Y, W, b, A = make_problem("per-task", np.float64, n, d, m, T)
    p = ops.check_problem(X, W, b, A)
    assert ops._block_rows(p) < T * n
    value, grads = mtrl_fast.loss_and_grad(X, Y, W, b, A, "hinge")
    ref_value, ref_grads = reference.loss_and_grad(X, Y, W, b, A, "hinge")
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    assert_grads_close(grads, ref_grads, (X, Y, W, b, A), "hinge", np.float64)


@pytest.mark.parametrize("order", ["F", "strided"])
def test_any_memory_order(layout, order):
    X, Y, W, b, A = make_problem(layout, np.float64, n=9, d=7, m=5, T=4)
    expected = mtrl_fast.loss_and_grad(X, Y, W, b, A)

    def relayout(a):
        if order == "F":
            return np.asfortranarray(a)
        padded = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
        padded[..., ::2] = a
        return padded[..., ::2]

    value, grads = mtrl_fast.loss_and_grad(*(relayout(a) for a in (X, Y, W, b, A)))
    assert value == pytest.approx(expected[0], rel=1e-14)
    assert_grads_close(grads, expected[1], (X, Y, W, b, A), "logistic", np.float64)


def test_float32_and_float64_agree_on_exact_inputs(layout):
    """On exact inputs the two dtypes differ only by the float32 rounding of the slopes."""
    p32 = make_problem(layout, np.float32, n=40, d=12, m=10, T=6)
    p64 = make_problem(layout, np.float64, n=40, d=12, m=10, T=6)
    np.testing.assert_array_equal(mtrl_fast.forward(*p32[:1], *p32[2:]), mtrl_fast.forward(*p64[:1], *p64[2:]))
    v32, g32 = mtrl_fast.loss_and_grad(*p32, loss="logistic")
    v64, g64 = mtrl_fast.loss_and_grad(*p64, loss="logistic")
    assert v32 == pytest.approx(v64, rel=1e-6)
    assert_grads_close(g32, Gradients(*(g.astype(np.float32) for g in g64)), p32, "logistic", np.float32)


def test_integer_labels_accepted(layout):
    X, Y, W, b, A = make_problem(layout, np.float32, n=8, d=3, m=4, T=2)
    expected = mtrl_fast.loss_and_grad(X, Y, W, b, A, "hinge")
    value, grads = mtrl_fast.loss_and_grad(X, Y.astype(np.int8), W, b, A, "hinge")
    assert value == expected[0]
    for got, want in zip(grads, expected[1]):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize(
    "size", [(37, 19, 23, 7), (1, 8, 16, 600), (64, 8, 4, 5)], ids=lambda s: "n{}-d{}-m{}-T{}".format(*s)
)
def test_the_shared_correlation_step_skips_the_output_product(dtype, size, bias):
    """Its slope ``-y`` needs no outputs: 4 products instead of 5, the value from the gradient's
    own terms (against the reference), and the gradients of the general path bit for bit (which
    ``backward`` runs, with ``dF`` the loss's slope)."""
    n, d, m, T = size
    X, Y, W, b, A = make_problem("shared", dtype, n=n, d=d, m=m, T=T, bias=bias)
    with ops.record_products() as products:
        value, grads = mtrl_fast.loss_and_grad(X, Y, W, b, A, "correlation")
    assert len(products) == 4
    want_value, want = reference.loss_and_grad(X, Y, W, b, A, "correlation")
    assert value == pytest.approx(want_value, rel=RTOL[dtype], abs=RTOL[dtype])
    assert_grads_close(grads, want, (X, Y, W, b, A), "correlation", dtype)
    general = mtrl_fast.backward(X, W, b, A, (-Y / (T * n)).astype(dtype))
    for name in ("W", "b", "A"):
        got, expected = getattr(grads, name), getattr(general, name)
        assert (got is None and expected is None) or np.array_equal(got, expected)
