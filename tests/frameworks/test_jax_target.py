"""mtrl_fast.jax's XLA custom call: it checks every buffer before it writes, first use is thread-safe,
and the user's settings follow the op onto XLA's own threads.

The calls that hand the target wrong buffers run in a subprocess: before the target checked them, they
corrupted the heap, and a crash must fail the test, not end the run.
"""

import threading

import numba
import numpy as np
import pytest

import mtrl_fast
from helpers import run_python
from mtrl_fast import _scratch, gemms, ops

jax = pytest.importorskip("jax")
import mtrl_fast.jax as mj  # noqa: E402

jnp = jax.numpy

pytestmark = pytest.mark.skipif(not mj.call_path().startswith("ffi"), reason="XLA's FFI does not run here")

WRONG_BUFFERS = """
import jax, jax.numpy as jnp, numpy as np
import mtrl_fast.jax as mj
from mtrl_fast import _xla_ffi

jax.config.update("jax_enable_x64", True)
f64, f32 = jnp.float64, jnp.float32
rng = np.random.default_rng(0)
T, n, d, m = 64, 32, 8, 512  # per-task X: the shapes that aborted the process before
X = jnp.asarray(rng.standard_normal((T, n, d)))
Y = jnp.asarray(np.sign(rng.standard_normal((T, n))))
W, b, A = jnp.asarray(rng.standard_normal((m, d))), jnp.zeros(m), jnp.asarray(rng.standard_normal((T, m)))
mj.loss(X, Y, W, b, A)  # registers the target
target = "mtrl_fast_loss_logistic" + mj._settings.Settings.here().suffix()
S = jax.ShapeDtypeStruct

def call(results, operands=(X, Y, W, b, A)):
    try:
        jax.block_until_ready(jax.jit(lambda *ops: _xla_ffi.call(target, results, ops, "sequential"))(*operands))
    except Exception as error:
        print("refused:", str(error).splitlines()[0][:300])
    else:
        print("accepted")

right = [S((), f64), S(W.shape, f64), S(b.shape, f64), S(A.shape, f64)]
call([S((), f64), S(W.shape, f64), S((1,), f64), S((1, 1), f64)])     # smaller (the issue's case)
call([S((), f64), S(W.shape, f64), S(b.shape, f64), S((T, m + 1), f64)])  # larger
call([S((), f64), S((m * d,), f64), S(b.shape, f64), S(A.shape, f64)])   # wrong rank
call([S((), f64), S(W.shape, f32), S(b.shape, f64), S(A.shape, f64)])   # wrong dtype
call([S((), f64), S((0, d), f64), S(b.shape, f64), S(A.shape, f64)])     # a zero-size result
call(right[:3])                                                            # a result missing
call(right, (X[:, :0], Y[:, :0], W, b, A))                                 # zero-size operands
call(right)                                                                # what the op declares
print("alive")
"""


def test_wrong_result_buffers_are_refused_before_any_write():
    done = run_python(WRONG_BUFFERS, MTRL_FAST_JAX_CALLBACK="0")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[-1] == "alive" and lines[-2] == "accepted", done.stdout
    refusals = lines[:-2]
    assert len(refusals) == 7 and all(line.startswith("refused:") for line in refusals), done.stdout
    assert all("INVALID_ARGUMENT" in line for line in refusals), done.stdout
    assert "result grad b must have shape (512,)" in refusals[0]
    assert "result grad A must have shape (64, 512)" in refusals[1]
    assert "result grad W must have shape (512, 8)" in refusals[2]
    assert "dtype float64" in refusals[3]
    assert "result grad W" in refusals[4]
    assert "the op writes 4 results" in refusals[5]
    assert "X must" in refusals[6] or "empty" in refusals[6]


def test_operands_are_read_only():
    from mtrl_fast import _xla_ffi

    def scribble(operands, results):
        operands[0][...] = 0.0

    _xla_ffi.register("mtrl_fast_test_scribble", scribble)
    x = jnp.ones(3, jnp.float32)
    with pytest.raises(Exception, match="INVALID_ARGUMENT: ValueError: .*read-only"):
        jax.jit(
            lambda x: _xla_ffi.call("mtrl_fast_test_scribble", [jax.ShapeDtypeStruct((3,), x.dtype)], [x], "sequential")
        )(x)
    np.testing.assert_array_equal(np.asarray(x), 1.0)


FIRST_USE_RACE = """
import threading, warnings
warnings.simplefilter("error")  # a fallback warning fails the run
import jax, jax.numpy as jnp
import mtrl_fast.jax as mj
from mtrl_fast import _xla_ffi

_xla_ffi._RACE_WINDOW = 0.2  # every thread reaches the first use before any has finished it
barrier = threading.Barrier(6)
paths, errors = [], []
X, Y = jnp.ones((8, 3)), jnp.ones((2, 8))

def first_use(k):
    try:
        barrier.wait()
        if k % 2:
            paths.append(mj.call_path())
        else:
            jax.block_until_ready(jax.jit(lambda W, A: mj.loss(X, Y, W, None, A))(jnp.ones((4, 3)), jnp.ones((2, 4))))
            paths.append(mj.call_path())
    except BaseException as error:
        errors.append(repr(error))

threads = [threading.Thread(target=first_use, args=(k,)) for k in range(6)]
for thread in threads: thread.start()
for thread in threads: thread.join()
print(errors)
print(sorted(set(paths)))
"""


def test_first_use_from_many_threads_decides_once():
    """Before: an unlocked probe and registration gave mixed paths, fallback warnings and XLA's
    "Duplicate FFI handler registration" when threads used the ops for the first time at once."""
    done = run_python(FIRST_USE_RACE, MTRL_FAST_JAX_CALLBACK="0")
    assert done.returncode == 0, done.stderr[-3000:]
    errors, paths = done.stdout.splitlines()[-2:]
    assert errors == "[]"
    assert paths.startswith("['ffi (XLA FFI API") and paths.count("'") == 2, paths


def _compound_step(X, Y, b, A):
    """A jitted computation with other work beside the op: XLA runs the op on a thread of its pool."""
    big = jnp.ones((256, 256), X.dtype)

    def step(W):
        return jax.grad(lambda W: mj.loss(X, Y, W, b, A))(W), (big @ big).sum(), jnp.sin(big).sum()

    return jax.jit(step)


def _problem():
    rng = np.random.default_rng(1)
    X = jnp.asarray(rng.standard_normal((256, 16), dtype=np.float32))
    Y = jnp.asarray(np.sign(rng.standard_normal((3, 256))).astype(np.float32))
    W = jnp.asarray(rng.standard_normal((32, 16), dtype=np.float32))
    return X, Y, W, jnp.zeros(32, jnp.float32), jnp.asarray(rng.standard_normal((3, 32), dtype=np.float32))


def test_the_users_settings_apply_on_xlas_threads(monkeypatch):
    """Before: inside ``gemm("torch")`` and ``num_threads(1)`` the compound step ran with NumPy's GEMM and
    two threads on XLA's pool."""
    pytest.importorskip("torch")
    seen = []
    step = ops.fused_step

    def spy(*args, **kwargs):
        seen.append((gemms.get_gemm(), numba.get_num_threads(), type(threading.current_thread()).__name__))
        return step(*args, **kwargs)

    monkeypatch.setattr(ops, "fused_step", spy)
    X, Y, W, b, A = _problem()
    with mtrl_fast.gemm("torch"), mtrl_fast.num_threads(1):
        compound = _compound_step(X, Y, b, A)
        for _ in range(3):
            jax.block_until_ready(compound(W))
    assert len(seen) == 3
    assert {(gemm, threads) for gemm, threads, _ in seen} == {("torch", 1)}, seen


def test_kept_temporaries_are_reused_on_xlas_threads(monkeypatch):
    """Before: a thread XLA started began every call with fresh thread-local data, so its scratch was
    empty each time and every call allocated its temporaries anew."""
    handed = []
    scratch = ops.scratch

    def spy(slot, shape, dtype):
        array = scratch(slot, shape, dtype)
        foreign = isinstance(threading.current_thread(), threading._DummyThread)
        handed.append((slot, array.__array_interface__["data"][0], (threading.get_ident(), foreign)))
        return array

    monkeypatch.setattr(ops, "scratch", spy)
    X, Y, W, b, A = _problem()
    compound = _compound_step(X, Y, b, A)
    for _ in range(6):
        jax.block_until_ready(compound(W))
    by_thread = {}
    for slot, address, thread in handed:
        by_thread.setdefault(thread, {}).setdefault(slot, set()).add(address)
    assert any(foreign for _, foreign in by_thread), "XLA ran the op on the calling thread: no pool thread to test"
    for slots in by_thread.values():
        assert all(len(addresses) == 1 for addresses in slots.values()), by_thread
    mtrl_fast.release_scratch()
    assert not _scratch._foreign
