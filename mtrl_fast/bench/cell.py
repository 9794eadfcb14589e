"""The main job end to end: one paper cell (sampling, head steps, first-layer step, metrics) in
ours and as PyTorch and JAX users write it.

A cell draws ``T`` tasks' Gaussian inputs with labels ``sign(<v_t, M^T x>)``, takes a head step on
each task's own mean loss, draws fresh inputs and takes one step of the first layer on the
task-averaged loss, with the paper's defaults (``mtrl_fast.paper.train.PretrainConfig``). All
three start from the same ``M``, task vectors and first layer; each draws its own samples (ours
with its compiled sampler, PyTorch with ``torch.randn``, JAX with ``jax.random.normal``), so their
subspace distances agree within seed noise, which is checked before anything is timed.

Ours runs twice, labelled by sampler: on the full sampler, which draws all ``d`` coordinates of
every input as the peers do (the like-for-like row), and, where it is smaller, on the exact reduced
sampler, which draws ``r + width`` coordinates a sample and the rest of the first layer's gradient
from its conditional law (same distribution of every reported quantity, less work). Each row names
its sampler, the coordinates it draws per sample and the FLOPs of its products.

Each implementation runs in a process of its own with the same thread count; runs alternate
between them, and the table reports medians.
"""

import time
from dataclasses import dataclass

import numpy as np

from .peers import OURS, registry
from .timing import rotated

#: Tasks the peers draw and step at once (a user bounds memory the same way).
CHUNK = 50
#: Runs of ours (timed ones included) whose subspace distances measure the seed-to-seed spread that
#: the agreement check allows: enough that a peer two spreads off is refused (see check_agreement).
SPREAD_RUNS = 10
#: The agreement check's allowance: this many standard errors of the difference of two means.
AGREEMENT_SE = 3.0
#: The least allowance, for cells whose distance barely varies (T = 1 sits at 1.0): below the
#: spread of every cell that varies (a few thousandths at T = 1000), so it never widens theirs.
AGREEMENT_FLOOR = 5e-4


@dataclass(frozen=True)
class Row:
    """One row of the cell table: an implementation (a backend) on a sampler."""

    name: str
    backend: str
    sampler: str  # "full": every coordinate drawn, as the peers draw; "reduced": our exact reduction


def rows_for(backends, spec):
    """The table's rows for ``backends``: ours on the full sampler and on every other sampler of
    ``mtrl_fast.paper.samplers`` that draws fewer coordinates; each peer as its users write it
    (full)."""
    from mtrl_fast.paper.samplers import SAMPLERS

    rows = []
    for backend in backends:
        if backend == OURS:
            rows += [
                Row(f"{OURS} {name}", OURS, name)
                for name in SAMPLERS
                if name == "full" or spec.coordinates(name) < spec.d
            ]
        else:
            rows.append(Row(backend, backend, "full"))
    return rows


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

    def coordinates(self, sampler):
        """Coordinates drawn per sample on ``sampler`` (a name in ``mtrl_fast.paper.samplers``)."""
        from mtrl_fast.paper.samplers import SAMPLERS

        return SAMPLERS[sampler].dimension(self.d, self.r, self.width)

    def flops(self, sampler):
        """FLOPs of the cell's products on ``sampler``, with ``k`` coordinates a sample: per phase,
        the labels' ``X M`` (``2 T n k r``) and ``X W^T`` (``2 T n k m``); the first-layer phase adds
        ``D^T X`` (``2 T n k m``)."""
        k = self.coordinates(sampler)
        return 2 * self.T * self.n * k * (2 * self.r + 3 * self.width)

    def config(self, sampler="full"):
        """The paper's training settings at this cell's width, on ``sampler``."""
        from mtrl_fast.paper.train import PretrainConfig

        return PretrainConfig(width=self.width, sampler=sampler)

    def problem(self):
        """``(M, V, W0)``: the ground truth, the task vectors and the first layer, in float64."""
        from mtrl_fast.paper.tasks import make_task_family
        from mtrl_fast.paper.train import initial_layer

        rng = np.random.default_rng([self.seed, self.d, self.T])
        family = make_task_family(self.d, self.r, self.T, rng)
        return family.M, family.V, initial_layer(self.width, self.d, rng, dtype="float64")


def chunks(T):
    """``(first, count)`` of each chunk of :data:`CHUNK` tasks that the peers draw and step at once."""
    return [(first, min(CHUNK, T - first)) for first in range(0, T, CHUNK)]


def cell_peers():
    """The implementations that run whole cells: ours and every peer with a ``cell``."""
    return tuple(name for name, peer in registry().items() if peer.cell is not None)


def _worker(conn, name, threads):
    """Serve one implementation: each request runs a cell (a seed, a sampler) and answers its time
    and its subspace distance."""
    from .. import set_num_threads
    from ..paper.metrics import subspace_distance
    from .peers import get

    peer = get(name)
    peer.set_threads(threads)
    set_num_threads(threads)
    while True:
        command, payload = conn.recv()
        if command == "stop":
            conn.send(("ok", None))
            return
        try:
            spec, seed, sampler = payload
            M, V, W0 = spec.problem()
            start = time.perf_counter()
            W = peer.cell(spec, M, V, W0, seed, sampler)
            seconds = time.perf_counter() - start
            conn.send(("ok", (seconds, subspace_distance(W, M))))
        except Exception as error:  # reported to the parent
            conn.send(("error", f"{type(error).__name__}: {error}"))


def run_cell_benchmark(spec, names=None, threads=2, repeat=3, log=print, native_blas=False):
    """Time the cell in each implementation: ``{row: {"sampler", "coordinates", "flops",
    "seconds": [...], "distance": [...]}}``, one row per :func:`rows_for`.

    A first run of each row (compilation, JIT tracing) is untimed; then ``repeat`` rounds alternate
    between the rows, each run on a new seed. Ours then runs on further seeds, untimed, until
    :data:`SPREAD_RUNS` distances measure the seed-to-seed spread (kept as ``"spread"``). Raises
    ``RuntimeError`` when a peer's mean distance strays from ours by more than that spread allows
    (:func:`check_agreement`).
    """
    from .runner import _Worker

    names = cell_peers() if names is None else names
    rows = rows_for(names, spec)
    workers = {name: _Worker(name, threads, native_blas=native_blas, target=_worker) for name in names}
    results = {
        row.name: {
            "sampler": row.sampler,
            "coordinates": spec.coordinates(row.sampler),
            "flops": spec.flops(row.sampler),
            "seconds": [],
            "distance": [],
        }
        for row in rows
    }
    try:
        for row in rows:
            workers[row.backend].ask("run", (spec, 10_000, row.sampler))  # warm: compile, trace, touch pages
            log(f"  {row.name}: warmed up")
        for round_index in range(repeat):
            for row in rotated(rows, round_index):
                seconds, distance = workers[row.backend].ask("run", (spec, round_index, row.sampler))
                results[row.name]["seconds"].append(seconds)
                results[row.name]["distance"].append(distance)
                log(f"  round {round_index + 1}/{repeat} {row.name}: {seconds:.2f} s, distance {distance:.4f}")
        ours = next((row for row in reversed(rows) if row.backend == OURS), None)  # the cheaper sampler
        if ours is not None and len(rows) > 1:
            spread = results[ours.name].setdefault("spread", [])
            for seed in range(repeat, max(repeat, SPREAD_RUNS)):
                spread.append(workers[OURS].ask("run", (spec, 20_000 + seed, ours.sampler))[1])
            distances = results[ours.name]["distance"] + spread
            log(f"  the distance's spread over {len(distances)} seeds of {ours.name}: {np.std(distances):.4f}")
    finally:
        for worker in workers.values():
            worker.close()
    check_agreement(results)
    return results


def agreement_tolerance(ours, peer_runs):
    """How far a peer's mean distance over ``peer_runs`` seeds may lie from ours: :data:`AGREEMENT_SE`
    standard errors of the difference of two means, ``s sqrt(1/n_peer + 1/n_ours)``, with ``s`` the
    seed-to-seed standard deviation of ours alone (its timed and untimed ``"spread"`` runs), and at
    least :data:`AGREEMENT_FLOOR`. Ours alone: a peer's own spread would widen its allowance, and a
    wrong peer may well be a noisy one. The spread depends on ``d`` and ``T`` (at T = 16 a draw
    moves the distance by 0.05, at T = 1000 by a few thousandths), so it is measured on the cell
    at hand, not assumed; the implementations draw their samples from their own generators, so the
    seeds are independent, not paired."""
    distances = np.asarray(ours["distance"] + ours.get("spread", []))
    s = float(np.std(distances, ddof=1)) if len(distances) > 1 else 0.0
    return max(AGREEMENT_SE * s * np.sqrt(1.0 / max(1, peer_runs) + 1.0 / len(distances)), AGREEMENT_FLOOR)


def check_agreement(results, reference=OURS):
    """Raise ``RuntimeError`` unless every row's mean subspace distance is within
    :func:`agreement_tolerance` of the reference's (ours: the row that measured the spread, else
    its first row)."""
    mine = [name for name in results if name.split(" ")[0] == reference]
    if not mine:
        return
    base = next((name for name in mine if "spread" in results[name]), mine[0])
    ours = float(np.mean(results[base]["distance"] + results[base].get("spread", [])))
    for name, result in results.items():
        if name == base:
            continue
        tolerance = agreement_tolerance(results[base], len(result["distance"]))
        gap = abs(np.mean(result["distance"]) - ours)
        if gap > tolerance:
            raise RuntimeError(
                f"{name}'s subspace distance {np.mean(result['distance']):.4f} differs from {base}'s "
                f"{ours:.4f} by more than {tolerance:.4f} (the seeds' spread allows that much): not the same "
                "computation"
            )
