"""JAX (CPU): ``jit(value_and_grad)`` of the objective (``jax``), or of mtrl_fast.jax's loss (``jax+ours``),
with float64 enabled when asked for."""
import os

import numpy as np

from mtrl_fast.gradients import Gradients

from . import Backend, PreparedStep, importable


def _loss(jnp, name, F, Y):
    if name == "squared":
        return 0.5 * (F - Y) ** 2
    if name == "logistic":
        return jnp.logaddexp(0.0, -Y * F)
    if name == "hinge":
        return jnp.maximum(0.0, 1.0 - Y * F)
    return -Y * F


def backend(name):
    def prepare(X, Y, W, b, A, loss):
        import jax
        import jax.numpy as jnp

        if X.dtype == np.float64:
            # Without this JAX silently computes in float32.
            jax.config.update("jax_enable_x64", True)
        shared = X.ndim == 2

        def objective(W, b, A, X, Y):
            if name == "jax+ours":
                import mtrl_fast.jax as ours

                return ours.loss(X, Y, W, b, A, loss)
            Z = X @ W.T
            if b is not None:
                Z = Z + b
            H = jax.nn.relu(Z)  # derivative 0 at 0; jnp.maximum would split a tie as 1/2
            F = A @ H.T if shared else jnp.einsum("tnm,tm->tn", H, A)
            return jnp.mean(_loss(jnp, loss, F, Y))

        step = jax.jit(jax.value_and_grad(objective, argnums=(0, 1, 2)))
        args = [jnp.asarray(a) if a is not None else None for a in (W, b, A, X, Y)]
        assert args[3].dtype == X.dtype, f"JAX computes in {args[3].dtype}, not {X.dtype}"
        last = {}

        def run():
            last["out"] = jax.block_until_ready(step(*args))
            return last["out"]

        def result():
            value, (gW, gb, gA) = last["out"] if "out" in last else run()
            return float(value), Gradients(W=np.asarray(gW), b=None if gb is None else np.asarray(gb),
                                           A=np.asarray(gA))

        return PreparedStep(run, result)

    def set_threads(k):
        # XLA's CPU thread pool is sized when JAX starts; this must run before the first import.
        if k == 1:
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                       + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

    def version():
        import jax

        return jax.__version__

    return Backend(name, lambda: importable("jax"), prepare, set_threads, version)
