"""JAX (CPU): ``jit(value_and_grad)`` of the objective (``jax``), or of mtrl_fast.jax's loss (``jax+ours``),
with float64 enabled when asked for."""

import os
from types import SimpleNamespace

import numpy as np

from mtrl_fast import losses
from mtrl_fast.gradients import Gradients

from . import Backend, PreparedStep, importable


def example_losses(jnp, name, F, Y):
    """Per-example losses in JAX: the loss table's formula; raises for an unknown name."""
    import jax

    return losses.loss(name).formula(SimpleNamespace(softplus=jax.nn.softplus, relu=jax.nn.relu), F, Y)


def _objective(name, loss, X):
    """The mean loss as a function of ``(W, b, A, X, Y)``: plain JAX, or mtrl_fast.jax's op."""
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
        return jnp.mean(example_losses(jnp, loss, F, Y))

    return objective


def _prepared(jax, jitted, X, Y, W, b, A, split):
    """A PreparedStep running ``jitted(W, b, A, X, Y)`` on device copies of the inputs;
    ``split(out)`` gives ``(value, (W-like, b-like, A-like))`` for the agreement check."""
    import jax.numpy as jnp

    args = [jnp.asarray(a) if a is not None else None for a in (W, b, A, X, Y)]
    assert args[3].dtype == X.dtype, f"JAX computes in {args[3].dtype}, not {X.dtype}"
    last = {}

    def run():
        last["out"] = jax.block_until_ready(jitted(*args))
        return last["out"]

    def result():
        value, (gW, gb, gA) = split(last["out"] if "out" in last else run())
        return float(value), Gradients(W=np.asarray(gW), b=None if gb is None else np.asarray(gb), A=np.asarray(gA))

    return PreparedStep(run, result)


def backend(name):
    def prepare(X, Y, W, b, A, loss):
        import jax

        step = jax.jit(jax.value_and_grad(_objective(name, loss, X), argnums=(0, 1, 2)))
        return _prepared(jax, step, X, Y, W, b, A, lambda out: out)

    def prepare_round(X, Y, W, b, A, loss):
        import jax

        from ..workload import ROUND

        objective = _objective(name, loss, X)
        T = A.shape[0]

        @jax.jit
        def round_(W, b, A, X, Y):
            # As a JAX user writes it: grad with respect to the heads alone, then the first layer;
            # XLA drops what each gradient does not need.
            for _ in range(ROUND["head_steps"]):
                A = A - ROUND["head_lr"] * T * jax.grad(objective, argnums=2)(W, b, A, X, Y)
            value, (gW, gb) = jax.value_and_grad(objective, argnums=(0, 1))(W, b, A, X, Y)
            W = (1 - ROUND["lr"] * ROUND["weight_decay"]) * W - ROUND["lr"] * gW
            if b is not None:
                b = b - ROUND["lr"] * gb
            return value, W, b, A

        return _prepared(jax, round_, X, Y, W, b, A, lambda out: (out[0], out[1:]))

    def set_threads(k):
        # XLA's CPU thread pool is sized when JAX starts; this must run before the first import.
        if k == 1:
            os.environ["XLA_FLAGS"] = (
                os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
            )

    def version():
        import jax

        return jax.__version__

    return Backend(name, lambda: importable("jax"), prepare, set_threads, version, prepare_round)
