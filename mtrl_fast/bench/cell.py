"""The main job end to end: one paper cell (sampling, head steps, first-layer step, metrics) in
ours and as PyTorch and JAX users write it.

A cell draws ``T`` tasks' Gaussian inputs with labels ``sign(<v_t, M^T x>)``, takes a head step on
each task's own mean loss, draws fresh inputs and takes one step of the first layer on the
task-averaged loss, with the paper's defaults (``mtrl_fast.paper.train.PretrainConfig``). All
three start from the same ``M``, task vectors and first layer; each draws its own samples (ours
with its compiled sampler, PyTorch with ``torch.randn``, JAX with ``jax.random.normal``), so their
subspace distances agree within seed noise, which is checked before anything is timed.

Each implementation runs in a process of its own with the same thread count; runs alternate
between them, and the table reports medians.
"""

import time
from dataclasses import dataclass
from functools import cache

import numpy as np

from .backends import FRAMEWORKS, OURS

#: The implementations, by backend name.
CELL_BACKENDS = (OURS, *FRAMEWORKS)
#: Tasks the peers draw and step at once (a user bounds memory the same way).
CHUNK = 50


@dataclass(frozen=True)
class CellSpec:
    """One recovery cell: input dimension, tasks, width, subspace dimension, seed."""

    d: int = 400
    T: int = 1000
    width: int = 256
    r: int = 5
    seed: int = 0

    @property
    def n(self):
        return 5 * self.d  # the paper's default samples per task and phase

    def problem(self):
        """``(M, V, W0)``: the ground truth, the task vectors and the first layer, in float64."""
        from mtrl_fast.paper.tasks import make_task_family
        from mtrl_fast.paper.train import initial_layer

        rng = np.random.default_rng([self.seed, self.d, self.T])
        family = make_task_family(self.d, self.r, self.T, rng)
        return family.M, family.V, initial_layer(self.width, self.d, rng, dtype="float64")


def _config(spec):
    from mtrl_fast.paper.train import PretrainConfig

    return PretrainConfig(width=spec.width)


def _chunks(T):
    return [(first, min(CHUNK, T - first)) for first in range(0, T, CHUNK)]


def run_ours(spec, M, V, W0, seed):
    from mtrl_fast.paper.tasks import TaskFamily
    from mtrl_fast.paper.train import pretrain

    return pretrain(TaskFamily(M=M, V=V), _config(spec), np.random.default_rng(seed), W0=W0).W


def run_torch(spec, M, V, W0, seed):
    import torch

    from mtrl_fast.torch import _plain_losses

    config = _config(spec)
    torch.manual_seed(seed)
    Mt, Vt = torch.from_numpy(M).float(), torch.from_numpy(V).float()
    W = torch.from_numpy(W0).float()
    A = torch.zeros(spec.T, spec.width)

    def data(c, v):
        X = torch.randn(c, spec.n, spec.d)
        scores = torch.einsum("cnr,cr->cn", X @ Mt, v)
        return X, torch.where(scores >= 0, 1.0, -1.0)

    def outputs(X, W, a):
        return torch.einsum("cnm,cm->cn", torch.relu(X @ W.T), a)

    for _ in range(config.rounds):
        gW = torch.zeros_like(W)
        for first, c in _chunks(spec.T):
            v = Vt[first : first + c]
            X, Y = data(c, v)
            a = A[first : first + c].clone()
            for _ in range(config.head_steps):  # each task's head on its own mean loss
                a.requires_grad_(True)
                (g,) = torch.autograd.grad(_plain_losses(config.loss, outputs(X, W, a), Y).mean(dim=1).sum(), a)
                a = (a - config.head_lr * g).detach()
            A[first : first + c] = a
            X, Y = data(c, v)
            Wr = W.clone().requires_grad_(True)
            share = _plain_losses(config.loss, outputs(X, Wr, a), Y).sum() / (spec.T * spec.n)
            (g,) = torch.autograd.grad(share, Wr)
            gW += g
        W = (1 - config.lr * config.weight_decay) * W - config.lr * gW
    return W.double().numpy()


@cache
def _jax_chunk(spec):
    """The jitted work of one chunk of tasks, made once per cell shape (as a user's script would)."""
    import jax
    import jax.numpy as jnp

    from .backends._jax import _loss  # the JAX peer's own formulas

    config = _config(spec)

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
                lambda a: _loss(jnp, config.loss, outputs(X, W, a), Y).mean(axis=1).sum()
            )(a)
        X, Y = data(layer_key, M, v)
        return a, jax.grad(lambda W: _loss(jnp, config.loss, outputs(X, W, a), Y).sum() / (spec.T * spec.n))(W)

    return chunk


def run_jax(spec, M, V, W0, seed):
    import jax
    import jax.numpy as jnp

    config = _config(spec)
    chunk = _jax_chunk(spec)
    M, V = jnp.asarray(M, jnp.float32), jnp.asarray(V, jnp.float32)
    W = jnp.asarray(W0, jnp.float32)
    A = jnp.zeros((spec.T, spec.width), jnp.float32)
    key = jax.random.key(seed)
    for round_index in range(config.rounds):
        gW = jnp.zeros_like(W)
        for first, c in _chunks(spec.T):
            a, g = chunk(
                jax.random.fold_in(key, round_index * spec.T + first), W, M, V[first : first + c], A[first : first + c]
            )
            A = A.at[first : first + c].set(a)
            gW = gW + g
        W = (1 - config.lr * config.weight_decay) * W - config.lr * gW
    return np.asarray(W, dtype=np.float64)


RUNNERS = {OURS: run_ours, "torch": run_torch, "jax": run_jax}


def _worker(conn, name, threads):
    """Serve one implementation: each request runs a cell (a fresh seed) and answers its time and
    its subspace distance."""
    from .. import set_num_threads
    from ..paper.metrics import subspace_distance
    from .backends import get

    get(name).set_threads(threads)
    set_num_threads(threads)
    while True:
        command, payload = conn.recv()
        if command == "stop":
            conn.send(("ok", None))
            return
        try:
            spec, seed = payload
            M, V, W0 = spec.problem()
            start = time.perf_counter()
            W = RUNNERS[name](spec, M, V, W0, seed)
            seconds = time.perf_counter() - start
            conn.send(("ok", (seconds, subspace_distance(W, M))))
        except Exception as error:  # reported to the parent
            conn.send(("error", f"{type(error).__name__}: {error}"))


def run_cell_benchmark(spec, names=CELL_BACKENDS, threads=2, repeat=3, log=print, native_blas=False):
    """Time the cell in each implementation: ``{name: {"seconds": [...], "distance": [...]}}``.

    A first run of each (compilation, JIT tracing) is untimed; then ``repeat`` rounds alternate
    between the implementations, each run on a new seed. Raises ``RuntimeError`` when a peer's
    mean distance strays from ours by more than the seeds' spread allows.
    """
    from .runner import _Worker

    workers = {name: _Worker(name, threads, native_blas=native_blas, target=_worker) for name in names}
    results = {name: {"seconds": [], "distance": []} for name in names}
    try:
        for name, worker in workers.items():
            worker.ask("run", (spec, 10_000))  # warm: compile, trace, touch pages
            log(f"  {name}: warmed up")
        for round_index in range(repeat):
            order = names[round_index % len(names) :] + names[: round_index % len(names)]
            for name in order:
                seconds, distance = workers[name].ask("run", (spec, round_index))
                results[name]["seconds"].append(seconds)
                results[name]["distance"].append(distance)
                log(f"  round {round_index + 1}/{repeat} {name}: {seconds:.2f} s, distance {distance:.4f}")
    finally:
        for worker in workers.values():
            worker.close()
    check_agreement(results)
    return results


def check_agreement(results, reference=OURS):
    """Raise ``RuntimeError`` unless every implementation's mean subspace distance is within four
    standard errors (pooled over the implementations' seeds, at least 10% of the mean) of ours."""
    if reference not in results:
        return
    ours = np.asarray(results[reference]["distance"])
    spread = np.concatenate([np.asarray(r["distance"]) - np.mean(r["distance"]) for r in results.values()])
    tolerance = max(4 * np.std(spread) / np.sqrt(max(1, len(ours))), 0.1 * abs(ours.mean()))
    for name, result in results.items():
        gap = abs(np.mean(result["distance"]) - ours.mean())
        if gap > tolerance:
            raise RuntimeError(
                f"{name}'s subspace distance {np.mean(result['distance']):.4f} differs from ours "
                f"{ours.mean():.4f} by more than {tolerance:.4f}: not the same computation"
            )
