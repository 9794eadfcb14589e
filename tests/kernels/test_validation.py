"""Bad inputs raise ValueError or TypeError naming the argument, before any kernel runs."""

import numpy as np
import pytest

import mtrl_fast
from helpers import make_problem
from mtrl_fast import reference

APIS = [mtrl_fast, reference]


def good(layout="shared"):
    X, Y, W, b, A = make_problem(layout, np.float64, n=6, d=4, m=3, T=2)
    return dict(X=X, Y=Y, W=W, b=b, A=A)


def call(api, **args):
    return api.loss_and_grad(
        args["X"],
        args["Y"],
        args["W"],
        args["b"],
        args["A"],
        args.get("loss", "logistic"),
        check_finite=args.get("check_finite", True),
    )


CASES = [
    # (name, changes, error, words the message must contain)
    ("X 1-d", dict(X=np.ones(4)), ValueError, ["X", "(n, d) or (T, n, d)"]),
    ("X 4-d", dict(X=np.ones((2, 6, 4, 1))), ValueError, ["X", "(n, d) or (T, n, d)"]),
    ("W 1-d", dict(W=np.ones(4)), ValueError, ["W", "(m, d)"]),
    ("A 3-d", dict(A=np.ones((2, 3, 1))), ValueError, ["A", "(T, m)"]),
    ("b 2-d", dict(b=np.ones((3, 1))), ValueError, ["b", "(m,)"]),
    ("d mismatch", dict(W=np.ones((3, 5))), ValueError, ["X", "d = W.shape[1]"]),
    ("m mismatch A", dict(A=np.ones((2, 4))), ValueError, ["A", "m = W.shape[0]"]),
    ("m mismatch b", dict(b=np.ones(4)), ValueError, ["b", "m = W.shape[0]"]),
    ("T mismatch Y", dict(Y=np.ones((3, 6))), ValueError, ["Y", "(T, n)"]),
    ("n mismatch Y", dict(Y=np.ones((2, 5))), ValueError, ["Y", "n = X.shape[-2]"]),
    ("Y 1-d", dict(Y=np.ones(6)), ValueError, ["Y", "(T, n)"]),
    ("integer X", dict(X=np.ones((6, 4), dtype=np.int64)), TypeError, ["X", "float32 or float64"]),
    ("complex W", dict(W=np.ones((3, 4), dtype=complex)), TypeError, ["W", "float32 or float64"]),
    ("float16 A", dict(A=np.ones((2, 3), dtype=np.float16)), TypeError, ["A", "float32 or float64"]),
    ("object b", dict(b=np.array([1.0, None, 2.0], dtype=object)), TypeError, ["b"]),
    ("mixed dtypes", dict(W=np.ones((3, 4), dtype=np.float32)), TypeError, ["W", "float32", "X has float64"]),
    ("Y other float", dict(Y=np.ones((2, 6), dtype=np.float32)), TypeError, ["Y", "float64"]),
    ("A None", dict(A=None), TypeError, ["A", "not None"]),
    ("NaN in X", dict(X=np.full((6, 4), np.nan)), ValueError, ["X", "NaN or Inf", "check_finite"]),
    ("Inf in W", dict(W=np.full((3, 4), np.inf)), ValueError, ["W", "NaN or Inf"]),
    ("NaN in b", dict(b=np.array([0.5, np.nan, 0.5])), ValueError, ["b", "NaN or Inf"]),
    ("Inf in A", dict(A=np.array([[1.0, -np.inf, 0], [0, 0, 0]])), ValueError, ["A", "NaN or Inf"]),
    ("NaN in Y", dict(Y=np.full((2, 6), np.nan), loss="squared"), ValueError, ["Y", "NaN or Inf"]),
    ("label 0", dict(Y=np.zeros((2, 6))), ValueError, ["Y", "-1 or +1", "logistic"]),
    ("label 0.5 hinge", dict(Y=np.full((2, 6), 0.5), loss="hinge"), ValueError, ["Y", "-1 or +1", "hinge"]),
    ("label 2 correlation", dict(Y=np.full((2, 6), 2.0), loss="correlation"), ValueError, ["Y", "-1 or +1"]),
    ("unknown loss", dict(loss="cross-entropy"), ValueError, ["loss", "squared", "logistic"]),
    ("loss not str", dict(loss=3), TypeError, ["loss", "string"]),
    ("empty n", dict(X=np.ones((0, 4)), Y=np.ones((2, 0))), ValueError, ["n=0", "at least 1"]),
    ("empty d", dict(X=np.ones((6, 0)), W=np.ones((3, 0))), ValueError, ["d=0"]),
    ("empty m", dict(W=np.ones((0, 4)), b=np.ones(0), A=np.ones((2, 0))), ValueError, ["m=0"]),
    ("empty T", dict(A=np.ones((0, 3)), Y=np.ones((0, 6))), ValueError, ["T=0"]),
]


@pytest.mark.parametrize("api", APIS, ids=["kernels", "reference"])
@pytest.mark.parametrize("name, changes, error, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_naming_the_argument(api, name, changes, error, words):
    args = good()
    args.update(changes)
    with pytest.raises(error) as caught:
        call(api, **args)
    for word in words:
        assert word in str(caught.value), f"{word!r} missing from: {caught.value}"


def test_per_task_T_mismatch():
    args = good("per-task")
    args["X"] = args["X"][:1]
    with pytest.raises(ValueError, match=r"X must have shape \(T, n, d\).*T = A.shape\[0\]"):
        call(mtrl_fast, **args)


@pytest.mark.parametrize("api", APIS, ids=["kernels", "reference"])
def test_forward_validates_too(api):
    args = good()
    with pytest.raises(ValueError, match=r"W\.shape"):
        api.forward(args["X"], args["W"].T, args["b"], args["A"])
    with pytest.raises(ValueError, match="X contains NaN"):
        api.forward(np.full_like(args["X"], np.nan), args["W"], args["b"], args["A"])


def test_squared_loss_takes_any_real_target():
    args = good()
    args["Y"] = np.random.default_rng(1).standard_normal((2, 6))
    value, _ = call(mtrl_fast, loss="squared", **{k: v for k, v in args.items()})
    assert np.isfinite(value)


def test_check_finite_false_skips_the_check_and_propagates_nan():
    args = good()
    args["X"] = args["X"].copy()
    args["X"][0, 0] = np.nan
    value, grads = call(mtrl_fast, loss="squared", check_finite=False, **args)
    assert np.isnan(value)
    assert np.isnan(grads.W).any()
    F = mtrl_fast.forward(args["X"], args["W"], args["b"], args["A"], check_finite=False)
    assert np.isnan(F[:, 0]).all()


def test_array_likes_are_accepted():
    value, grads = mtrl_fast.loss_and_grad([[1.0, 2.0]], [[1]], [[0.5, -0.25]], None, [[1.5]])
    ref_value, ref_grads = reference.loss_and_grad(
        np.array([[1.0, 2.0]]), np.array([[1]]), np.array([[0.5, -0.25]]), None, np.array([[1.5]])
    )
    assert value == pytest.approx(ref_value)
    np.testing.assert_allclose(grads.W, ref_grads.W)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_finite_check_finds_every_bad_entry_and_accepts_huge_finite_values(dtype):
    from mtrl_fast._validate import _all_finite

    base = np.arange(1.0, 61.0, dtype=dtype).reshape(5, 12)
    assert _all_finite(base)
    for bad in (np.nan, np.inf, -np.inf):
        for index in [(0, 0), (2, 7), (4, 11)]:
            array = base.copy()
            array[index] = bad
            assert not _all_finite(array)
            assert not _all_finite(array[:, ::2] if index[1] % 2 == 0 else array[:, 1::2])  # not contiguous
    huge = np.full((3, 4), np.finfo(dtype).max / 2, dtype=dtype)  # its squares overflow; still finite
    assert _all_finite(huge)
    huge[1, 2] = np.nan
    assert not _all_finite(huge)
    assert _all_finite(np.empty((0, 3), dtype=dtype))


@pytest.mark.parametrize("api", APIS, ids=["kernels", "reference"])
def test_read_only_and_broadcast_arrays_give_the_writable_results(api, tmp_path):
    """Memory-mapped, buffer-backed, read-only and zero-stride inputs are accepted as they are."""
    X, Y, W, b, A = make_problem("per-task", np.float64, n=20, d=5, m=6, T=3)
    expected = api.loss_and_grad(X, Y, W, b, A)
    np.save(tmp_path / "Y.npy", Y)
    frozen = [a.copy() for a in (X, W, A)]
    for a in frozen:
        a.setflags(write=False)
    b_buffer = np.frombuffer(b.tobytes(), dtype=b.dtype)
    value, grads = api.loss_and_grad(
        frozen[0], np.load(tmp_path / "Y.npy", mmap_mode="r"), frozen[1], b_buffer, frozen[2]
    )
    assert value == expected[0]
    for got, want in zip(grads, expected[1]):
        np.testing.assert_array_equal(got, want)
    b_const = np.broadcast_to(np.float64(0.5), (6,))
    np.testing.assert_array_equal(api.forward(X, W, b_const, A), api.forward(X, W, np.full(6, 0.5), A))
    np.testing.assert_array_equal(
        api.backward(X, W, b_const, A, np.broadcast_to(Y[:1], Y.shape)).W,
        api.backward(X, W, np.full(6, 0.5), A, np.repeat(Y[:1], 3, axis=0)).W,
    )


@pytest.mark.parametrize("api", APIS, ids=["kernels", "reference"])
@pytest.mark.parametrize("name", ["X", "Y", "W", "b", "A"])
def test_masked_arrays_are_refused_by_name(api, name):
    """np.asarray would drop the mask, so the result would depend on the values under it."""
    args = good("per-task")
    args[name] = np.ma.masked_array(args[name], mask=np.zeros(args[name].shape, dtype=bool))
    with pytest.raises(TypeError, match=rf"^{name} is a masked array.*{name}\.filled"):
        call(api, **args)


@pytest.mark.parametrize("api", APIS, ids=["kernels", "reference"])
@pytest.mark.parametrize("layout", ["shared", "per-task"])
def test_non_native_byte_order_is_converted(api, layout):
    args = good(layout)
    expected = call(api, **args)
    swapped = {k: v.astype(v.dtype.newbyteorder(">" if np.little_endian else "<")) for k, v in args.items()}
    assert not swapped["X"].dtype.isnative
    value, grads = call(api, **swapped)
    assert value == expected[0]
    for got, want in zip(grads, expected[1]):
        np.testing.assert_array_equal(got, want)
        assert got.dtype.isnative
    np.testing.assert_array_equal(
        api.forward(swapped["X"], swapped["W"], swapped["b"], swapped["A"]),
        api.forward(args["X"], args["W"], args["b"], args["A"]),
    )
