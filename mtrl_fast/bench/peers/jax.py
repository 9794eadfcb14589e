"""JAX (CPU): ``jit(value_and_grad)`` of the objective as a JAX user writes it (``jax``), or of
mtrl_fast.jax's loss op (``jax+ours``), with float64 enabled when asked for."""

import os
from functools import cache
from types import SimpleNamespace

import numpy as np

from mtrl_fast import losses
from mtrl_fast.gradients import Gradients

from . import Peer, PreparedStep


def example_losses(name, F, Y):
    """Per-example losses in JAX: the loss table's formula; raises for an unknown name."""
    import jax

    return losses.loss(name).formula(SimpleNamespace(softplus=jax.nn.softplus, relu=jax.nn.relu), F, Y)


def _x64_where_asked(X):
    """Turn on JAX's float64 for float64 inputs: without it JAX silently computes in float32."""
    if X.dtype == np.float64:
        import jax

        jax.config.update("jax_enable_x64", True)


def _prepared(jitted, X, Y, W, b, A, split):
    """A PreparedStep running ``jitted(W, b, A, X, Y)`` on device copies of the inputs;
    ``split(out)`` gives ``(value, (W-like, b-like, A-like))`` for the agreement check."""
    import jax
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


class JaxCode(Peer):
    """The step and the round as jitted JAX code around :meth:`objective`: by default
    ``relu(X @ W.T + b)``, the heads and the loss's formula in ``jax.numpy``."""

    requires = "jax"

    def objective(self, loss, X):
        """The mean loss as a function of ``(W, b, A, X, Y)``."""
        import jax
        import jax.numpy as jnp

        _x64_where_asked(X)
        shared = X.ndim == 2

        def objective(W, b, A, X, Y):
            Z = X @ W.T
            if b is not None:
                Z = Z + b
            H = jax.nn.relu(Z)  # derivative 0 at 0; jnp.maximum would split a tie as 1/2
            F = A @ H.T if shared else jnp.einsum("tnm,tm->tn", H, A)
            return jnp.mean(example_losses(loss, F, Y))

        return objective

    def set_threads(self, k):
        # XLA's CPU thread pool is sized when JAX starts; this must run before the first import.
        if k == 1:
            os.environ["XLA_FLAGS"] = (
                os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
            )

    def prepare(self, X, Y, W, b, A, loss):
        import jax

        step = jax.jit(jax.value_and_grad(self.objective(loss, X), argnums=(0, 1, 2)))
        return _prepared(step, X, Y, W, b, A, lambda out: out)

    def prepare_round(self, X, Y, W, b, A, loss):
        import jax

        from ..workload import ROUND

        objective = self.objective(loss, X)
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

        return _prepared(round_, X, Y, W, b, A, lambda out: (out[0], out[1:]))


class Jax(JaxCode):
    """Plain JAX, and its whole paper cell."""

    name = "jax"

    def cell(self, spec, M, V, W0, seed, sampler="full"):
        """A paper cell as a JAX user writes it: ``jax.random`` inputs, each chunk of tasks' head
        steps and first-layer gradient in one jitted function, made once per cell shape."""
        import jax
        import jax.numpy as jnp

        from ..cell import chunks

        config = spec.config()
        chunk = _jax_chunk(spec)
        M, V = jnp.asarray(M, jnp.float32), jnp.asarray(V, jnp.float32)
        W = jnp.asarray(W0, jnp.float32)
        A = jnp.zeros((spec.T, spec.width), jnp.float32)
        key = jax.random.key(seed)
        for round_index in range(config.rounds):
            gW = jnp.zeros_like(W)
            for first, c in chunks(spec.T):
                a, g = chunk(
                    jax.random.fold_in(key, round_index * spec.T + first),
                    W,
                    M,
                    V[first : first + c],
                    A[first : first + c],
                )
                A = A.at[first : first + c].set(a)
                gW = gW + g
            W = (1 - config.lr * config.weight_decay) * W - config.lr * gW
        return np.asarray(W, dtype=np.float64)


class JaxOurs(JaxCode):
    """The same JAX code with ``mtrl_fast.jax.loss`` as the objective."""

    name = "jax+ours"
    role = "op"

    def objective(self, loss, X):
        import mtrl_fast.jax as ours

        _x64_where_asked(X)
        return lambda W, b, A, X, Y: ours.loss(X, Y, W, b, A, loss)


@cache
def _jax_chunk(spec):
    """The jitted work of one chunk of tasks, made once per cell shape (as a user's script would)."""
    import jax
    import jax.numpy as jnp

    config = spec.config()

    def data(key, M, v):
        X = jax.random.normal(key, (v.shape[0], spec.n, spec.d))
        return X, jnp.where(jnp.einsum("cnr,cr->cn", X @ M, v) >= 0, 1.0, -1.0)

    def outputs(X, W, a):
        return jnp.einsum("cnm,cm->cn", jax.nn.relu(X @ W.T), a)

    @jax.jit
    def chunk(key, W, M, v, a):
        head_key, layer_key = jax.random.split(key)
        X, Y = data(head_key, M, v)
        for _ in range(config.head_steps):
            a = a - config.head_lr * jax.grad(
                lambda a: example_losses(config.loss, outputs(X, W, a), Y).mean(axis=1).sum()
            )(a)
        X, Y = data(layer_key, M, v)
        return a, jax.grad(lambda W: example_losses(config.loss, outputs(X, W, a), Y).sum() / (spec.T * spec.n))(W)

    return chunk
