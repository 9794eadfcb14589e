"""A JAX training step's gradient through ``mtrl_fast.jax.loss`` on each call path, against the same
step called directly and against plain JAX.

Four functions per shape, in one process, alternating in bursts (``timing.alternating_medians``), so
that their ratios come from one run: ``jit(value_and_grad)`` through the op on XLA's FFI custom call
(``ffi``) and on ``jax.pure_callback`` (``callback``, traced with ``MTRL_FAST_JAX_CALLBACK=1``),
``mtrl_fast.loss_and_grad`` on the same arrays (``direct``, ``check_finite=False``: under ``jit`` the op
checks no values either) and the step written in ``jax.numpy`` and jitted (``plain``). Logistic loss,
float32. Beside them, ``ffi_noop``: a jitted custom call with the op's operands and results whose handler
does nothing, the path's fixed cost per call (XLA's dispatch, the handler's entry, the call frame read). ``benchmarks/jax_op.py`` prints the table; the asv suite tracks op / direct.
"""

import os
from collections.abc import Callable, Iterable

from .timing import alternating_medians
from .workload import step_inputs

#: ``(layout, n, d, m, T)``: a tiny shape, the issue's three, then held-out shapes of both layouts.
SHAPES = [
    ("shared", 512, 128, 128, 16),
    ("shared", 2048, 512, 256, 128),
    ("shared", 8192, 256, 256, 64),
    ("per-task", 512, 256, 128, 32),
    ("shared", 1024, 256, 256, 64),
    ("shared", 4096, 1024, 512, 256),
    ("per-task", 256, 512, 256, 64),
]
PATHS = ("ffi", "callback")


def _op_step(mj, X, Y, b, A, path: str) -> Callable:
    import jax

    step = jax.jit(jax.value_and_grad(lambda W, b, A: mj.loss(X, Y, W, b, A), argnums=(0, 1, 2)))
    return _traced_on(path, step)


def _traced_on(path: str, step: Callable) -> Callable:
    """``step`` with its first call (the trace) made on ``path``; later calls reuse that trace."""
    from mtrl_fast.jax import CALLBACK_VARIABLE

    def first_call(*args):
        previous = os.environ.pop(CALLBACK_VARIABLE, None)
        if path == "callback":
            os.environ[CALLBACK_VARIABLE] = "1"
        try:
            return step(*args)
        finally:
            os.environ.pop(CALLBACK_VARIABLE, None)
            if previous is not None:
                os.environ[CALLBACK_VARIABLE] = previous

    return first_call


def _noop_call(X, Y, W, b, A) -> Callable:
    import jax

    from .. import _xla_ffi

    _xla_ffi.register("mtrl_fast_bench_noop", lambda operands, results: None)
    structs = [jax.ShapeDtypeStruct(shape, X.dtype) for shape in ((), W.shape, b.shape, A.shape)]
    return jax.jit(lambda *operands: _xla_ffi.call("mtrl_fast_bench_noop", structs, operands, "sequential"))


def _plain_step(X, Y) -> Callable:
    import jax
    import jax.numpy as jnp

    def objective(W, b, A):
        H = jax.nn.relu(X @ W.T + b)
        F = A @ H.T if X.ndim == 2 else jnp.einsum("tnm,tm->tn", H, A)
        return jnp.logaddexp(0.0, -Y * F).mean()

    return jax.jit(jax.value_and_grad(objective, argnums=(0, 1, 2)))


def _functions(layout: str, n: int, d: int, m: int, T: int, seed: int) -> dict[str, Callable]:
    """The four calls compared at one shape, each traced and run once already."""
    import jax
    import jax.numpy as jnp

    import mtrl_fast
    import mtrl_fast.jax as mj

    X, Y, W, b, A = step_inputs(layout, n, d, m, T, "float32", seed)
    Xj, Yj, Wj, bj, Aj = (jnp.asarray(a) for a in (X, Y, W, b, A))
    steps = {path: _op_step(mj, Xj, Yj, bj, Aj, path) for path in PATHS}
    steps["plain"] = _plain_step(Xj, Yj)
    functions: dict[str, Callable] = {
        name: (lambda step=step: jax.block_until_ready(step(Wj, bj, Aj))) for name, step in steps.items()
    }
    functions["direct"] = lambda: mtrl_fast.loss_and_grad(X, Y, W, b, A, check_finite=False)
    noop = _noop_call(Xj, Yj, Wj, bj, Aj)
    functions["ffi_noop"] = lambda: jax.block_until_ready(noop(Xj, Yj, Wj, bj, Aj))
    for function in functions.values():
        function()  # the traces, each on its path
    return functions


def measure(shapes: Iterable[tuple], rounds: int = 15, seed: int = 0) -> list[dict[str, float]]:
    """Median seconds of each function (``ffi``, ``callback``, ``plain``, ``direct``, ``ffi_noop``) per shape."""
    return [alternating_medians(_functions(layout, n, d, m, T, seed), rounds) for layout, n, d, m, T in shapes]
