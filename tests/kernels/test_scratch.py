"""A step's temporaries are reused from one call to the next in a thread (no fresh pages to fault in
a training loop); nothing a step returns is one of them; each thread has its own."""

import threading
import tracemalloc

import numpy as np
import pytest

import mtrl_fast
from mtrl_fast import _scratch
from mtrl_fast.bench.workload import step_inputs


@pytest.fixture(autouse=True)
def fresh_scratch():
    _scratch.release_scratch()
    yield
    _scratch.release_scratch()


def _problem(layout="shared", n=512, d=32, m=128, T=16, dtype=np.float32, seed=0):
    return step_inputs(layout, n, d, m, T, dtype, seed)


@pytest.mark.parametrize("layout", ["shared", "per-task"])
def test_a_repeated_step_allocates_only_what_it_returns(layout):
    """Before: each call allocated its (n, m) pre-activations and back-propagated gradient and its
    (T, n) outputs afresh (a step's peak traced memory held all three)."""
    X, Y, W, b, A = _problem(layout)
    mtrl_fast.loss_and_grad(X, Y, W, b, A)  # the first call allocates its scratch
    tracemalloc.start()
    try:
        _, grads = mtrl_fast.loss_and_grad(X, Y, W, b, A)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    returned = sum(g.nbytes for g in grads if g is not None)
    temporaries = sum(array.nbytes for array in _scratch._state.arrays.values())  # H, R and D, or a block
    assert temporaries >= X.shape[-2] * W.shape[0] * X.dtype.itemsize
    assert peak < returned + temporaries // 4, (peak, returned, temporaries)


def test_results_never_alias_scratch_and_survive_the_next_call():
    X, Y, W, b, A = _problem()
    value, grads = mtrl_fast.loss_and_grad(X, Y, W, b, A)
    kept = [g.copy() for g in grads]
    F = mtrl_fast.forward(X, W, b, A)
    F_kept = F.copy()
    scratch = list(_scratch._state.arrays.values())
    assert scratch
    for result in (*grads, F):
        assert not any(np.shares_memory(result, array) for array in scratch)
    X2, Y2, W2, b2, A2 = _problem(seed=1)
    mtrl_fast.loss_and_grad(X2, Y2, W2, b2, A2)  # the same shapes: the same scratch, new values
    mtrl_fast.forward(X2, W2, b2, A2)
    for got, want in zip(grads, kept):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(F, F_kept)


def test_new_shapes_and_dtypes_get_their_own_scratch_with_the_same_bits():
    problems = [_problem(n=64), _problem(n=96, m=40), _problem(n=64, dtype=np.float64), _problem("per-task", n=32)]
    alone = []
    for problem in problems:
        _scratch.release_scratch()
        alone.append(mtrl_fast.loss_and_grad(*problem))
    _scratch.release_scratch()
    for _ in range(2):
        for problem, (want_value, want) in zip(problems, alone):
            value, grads = mtrl_fast.loss_and_grad(*problem)
            assert value == want_value
            for got, expected in zip(grads, want):
                np.testing.assert_array_equal(got, expected)


def test_a_temporary_beyond_the_budget_is_not_kept(monkeypatch):
    monkeypatch.setattr(_scratch, "BUDGET", 1000)
    small = _scratch.scratch("a", (10,), np.dtype(np.float64))
    assert _scratch.scratch("a", (10,), np.dtype(np.float64)) is small
    big = _scratch.scratch("b", (200,), np.dtype(np.float64))
    assert _scratch.scratch("b", (200,), np.dtype(np.float64)) is not big
    assert [key[0] for key in _scratch._state.arrays] == ["a"]


def test_alternating_shapes_keep_theirs_and_the_least_recently_used_goes_first(monkeypatch):
    """A benchmark or a loop that alternates two problems (a forward and a step, two batch sizes)
    keeps both: before, one array per slot was replaced at every change of shape, and its pages
    faulted again."""
    monkeypatch.setattr(_scratch, "BUDGET", 2000)
    f64 = np.dtype(np.float64)
    one, two = _scratch.scratch("H", (100,), f64), _scratch.scratch("H", (110,), f64)
    assert _scratch.scratch("H", (100,), f64) is one and _scratch.scratch("H", (110,), f64) is two
    _scratch.scratch("D", (60,), f64)  # 800 + 880 + 480 bytes > 2000: the least recently used (100,) goes
    assert _scratch.scratch("H", (110,), f64) is two
    assert _scratch.scratch("H", (100,), f64) is not one
    assert _scratch.scratch("H", (100,), np.dtype(np.float32)) is not _scratch.scratch("H", (100,), f64)


def test_each_thread_has_its_own_scratch():
    seen = {}

    def grab(name):
        seen[name] = _scratch.scratch("H", (8, 8), np.dtype(np.float32))

    threads = [threading.Thread(target=grab, args=(k,)) for k in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    grab("main")
    arrays = list(seen.values())
    assert all(a is not b for k, a in enumerate(arrays) for b in arrays[k + 1 :])
