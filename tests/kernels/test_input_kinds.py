"""Fuzzing the API with the kinds of arrays research code passes: every call gives the plain
arrays' result or a clean TypeError/ValueError naming the argument."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mtrl_fast
from helpers import assert_close, make_problem
from mtrl_fast import reference


def _read_only(a):
    a = a.copy()
    a.setflags(write=False)
    return a


def _strided(a):
    """The same values as a non-contiguous view into a larger array."""
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
    wide[..., ::2] = a
    return wide[..., ::2]


# Kinds that keep the values: the result must equal the plain arrays' result exactly.
SAME_VALUES = {
    "plain": lambda a: a,
    "read-only": _read_only,
    "Fortran order": np.asfortranarray,
    "strided view": _strided,
    "swapped byte order": lambda a: a.astype(a.dtype.newbyteorder("S")),
    "buffer-backed": lambda a: np.frombuffer(a.tobytes(), dtype=a.dtype).reshape(a.shape),
    "broadcast": lambda a: np.broadcast_to(a, a.shape),
    "nested list": lambda a: a.tolist(),  # float64 once converted: used with float64 problems only
    "ndarray subclass": lambda a: a.view(type("Tagged", (np.ndarray,), {})),
}
# Kinds that cannot be used: a TypeError or ValueError whose message starts with the argument's name.
REFUSED = {
    "None": lambda a: None,
    "masked": lambda a: np.ma.masked_array(a),
    "float16": lambda a: a.astype(np.float16),
    "complex": lambda a: a.astype(complex),
    "strings": lambda a: a.astype(str),
    "extra axis": lambda a: a[..., None],
    "one fewer row": lambda a: a[:-1] if a.shape[0] > 1 else a[:0],
}
KINDS = {**SAME_VALUES, **REFUSED}
ARGS = ("X", "Y", "W", "b", "A")


@given(
    layout=st.sampled_from(["shared", "per-task"]),
    dtype=st.sampled_from([np.float32, np.float64]),
    kinds=st.fixed_dictionaries({name: st.sampled_from(sorted(KINDS)) for name in ARGS}),
    sizes=st.tuples(*(st.integers(1, 4) for _ in range(4))),
    api=st.sampled_from([mtrl_fast, reference]),
)
def test_any_array_kind_gives_the_plain_result_or_a_named_error(layout, dtype, kinds, sizes, api):
    n, d, m, T = sizes
    if dtype == np.float32:
        kinds = {name: "plain" if kind == "nested list" else kind for name, kind in kinds.items()}
    plain = dict(zip(ARGS, make_problem(layout, dtype, n=n, d=d, m=m, T=T)))
    args = {name: KINDS[kinds[name]](plain[name]) for name in ARGS}
    try:
        value, grads = api.loss_and_grad(args["X"], args["Y"], args["W"], args["b"], args["A"])
    except (TypeError, ValueError) as error:
        assert any(kinds[name] in REFUSED for name in ARGS), f"{kinds} should have worked: {error}"
        # The argument named is the refused one, or the first whose shape disagrees with it.
        assert str(error).split()[0] in ARGS, f"{error!r} names no argument"
        return
    if kinds["b"] == "None":
        plain["b"] = None  # no bias: a valid call
    if all(kinds[name] in SAME_VALUES for name in ARGS if plain[name] is not None):
        expected = api.loss_and_grad(plain["X"], plain["Y"], plain["W"], plain["b"], plain["A"])
        assert value == expected[0]
        for got, want in zip(grads, expected[1]):
            np.testing.assert_array_equal(got, want)
            assert got is None or (got.dtype == dtype and got.dtype.isnative)
        return
    # A changed shape can still be a valid, different problem (A and Y both one task short; a
    # shared X (n, 1) with an extra axis read as per-task): then it must be solved correctly.
    converted = [None if args[name] is None else np.array(args[name]) for name in ARGS]
    expected = reference.loss_and_grad(*converted)
    assert_close(value, expected[0], dtype)
    for got, want in zip(grads, expected[1]):
        assert (got is None) == (want is None)
        if got is not None:
            assert_close(got, want, dtype, scale=1.0 + float(np.abs(want).max()))


@pytest.mark.parametrize("kind", sorted(SAME_VALUES))
def test_every_usable_kind_alone_gives_the_plain_result(kind):
    for name in ARGS:
        plain = dict(zip(ARGS, make_problem("per-task", np.float64, n=5, d=4, m=3, T=2)))
        args = dict(plain, **{name: SAME_VALUES[kind](plain[name])})
        value, grads = mtrl_fast.loss_and_grad(*(args[a] for a in ARGS))
        expected = mtrl_fast.loss_and_grad(*(plain[a] for a in ARGS))
        assert value == expected[0], (kind, name)
        for got, want in zip(grads, expected[1]):
            np.testing.assert_array_equal(got, want)
