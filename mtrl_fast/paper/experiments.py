"""The paper's reproduction grid: seeded, independent cells written atomically; results, figures, report.

A run is the cells of the studies its grid names (:mod:`mtrl_fast.paper.studies`: recovery,
downstream, width), each study owning what its cells compute and what the report says of them;
this module only orchestrates. Each cell draws from its own seed, so cells can run in any order or
in parallel, and each is written to ``DIR/cells/`` as soon as it finishes: a killed run resumes
where it stopped, and a finished cell is never computed again (unless its settings changed).
"""

import hashlib
import json
import time
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field, make_dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np

from .._platform import available_memory, blas_in_use
from .._progress import Progress
from . import clock, engines, networks, store
from .networks import AGGREGATION, SAMPLING
from .sampling import normals
from .studies import DEFAULT_STUDIES, STUDIES, Cell, parameters_of
from .train import PretrainConfig, task_bytes, task_shards


@dataclass(frozen=True)
class _Grid:
    """The fields every grid has; :data:`Grid` adds those its studies declare."""

    d: tuple[int, ...] = (50, 100, 200)
    r: int = 5
    tasks: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 100)
    seeds: int = 5
    label_kind: str = "linear"
    noise: float = 0.0
    base_seed: int = 0
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    studies: tuple[str, ...] = DEFAULT_STUDIES

    def __post_init__(self):
        unknown = [name for name in self.studies if name not in STUDIES]
        if unknown or not self.studies or len(set(self.studies)) != len(self.studies):
            raise ValueError(f"studies must be distinct names from {tuple(STUDIES)}; got {self.studies}")
        for name in ("d", "tasks"):
            values = getattr(self, name)
            if not all(isinstance(v, (int, np.integer)) and v >= 1 for v in values):
                raise ValueError(f"{name} must hold positive integers; got {values}")
        if any(d < self.r for d in self.d):
            raise ValueError(f"every d must be at least r = {self.r}")
        if self.pretrain.width < self.r:
            raise ValueError(f"width must be at least r = {self.r}; got {self.pretrain.width}")
        for name in ("seeds", "r"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1; got {getattr(self, name)}")
        chosen = {p.name for p in parameters_of(STUDIES[name] for name in self.studies)}
        missing = sorted(chosen - set(self.__dataclass_fields__))
        if missing:
            raise ValueError(
                f"the grid has no field for the parameters {missing}: register their study in STUDIES before "
                "mtrl_fast.paper.experiments is imported (the grid's fields are derived from the registry then)"
            )
        for parameter in PARAMETERS:
            # The "at least r" rules bind only the parameters of the studies that run.
            problem = parameter.problem(getattr(self, parameter.name), self.r if parameter.name in chosen else 0)
            if problem:
                raise ValueError(problem)

    def to_dict(self):
        return asdict(self)


_GRID_DOC = """What a reproduction run computes. The defaults are the full grid; :data:`QUICK` is smaller.

Its fields are the ones every grid has and those the studies declare (``Study.parameters``): a new
study's parameters become fields here, and options of ``mtrl-fast reproduce``, by its entry in
``STUDIES`` alone.

Attributes
----------
d : tuple of int
    Input dimensions of the recovery and mechanism studies.
r : int
    Dimension of the ground-truth subspace.
tasks : tuple of int
    Task counts ``T`` of the recovery and mechanism studies.
seeds : int
    Independent repetitions of every cell.
label_kind : {"linear", "relu-teacher"}
noise : float
    Label-flip probability.
base_seed : int
    Seed every cell's generator starts from.
pretrain : PretrainConfig
studies : tuple of str
    The studies to run, from ``mtrl_fast.paper.studies.STUDIES``.
"""


def _grid_class(studies):
    """``Grid``: the common fields, then every parameter the ``studies`` declare, with its default."""
    parameters = parameters_of(studies)
    fields = [(p.name, tuple[int, ...] if p.kind == "ints" else int, field(default=p.default)) for p in parameters]
    doc = _GRID_DOC + "".join(
        f"{p.name} : {'tuple of int' if p.kind == 'ints' else 'int'}\n    {p.help[0].upper() + p.help[1:]} "
        f"(default {p.default}; option ``{p.flag}``).\n"
        for p in parameters
    )
    grid = make_dataclass("Grid", fields, bases=(_Grid,), frozen=True, namespace={"__doc__": doc})
    grid.__module__ = __name__  # where pickling (a worker process, a Dask worker) finds it
    return grid


#: The parameters of every registered study (``Study.parameters``), each once.
PARAMETERS = parameters_of(STUDIES.values())
Grid = _grid_class(STUDIES.values())


QUICK = Grid(d=(50, 200), tasks=(1, 5, 20, 100), seeds=2, downstream_d=(50, 200), n_new=(20, 100))


def plan(grid):
    """All cells of ``grid``, study by study, the largest last within each so early results come fast."""
    return [cell for name in grid.studies for cell in STUDIES[name].cells(grid)]


def _settings_of(cell, grid):
    """What a cell's result depends on besides its coordinates: it is recomputed when these change."""
    study = STUDIES[cell.study]
    config = study.pretrain_config(cell, grid)
    settings = {
        "r": grid.r,
        "label_kind": grid.label_kind,
        "noise": grid.noise,
        "base_seed": grid.base_seed,
        "pretrain": grid.pretrain.to_dict(),
        "sampling": SAMPLING,
        "aggregation": AGGREGATION,
        "sampler": config.sampler_for(cell.d, grid.r),
    }
    settings.update(study.settings(grid))
    return settings


def fingerprint(cell, grid):
    text = json.dumps(_settings_of(cell, grid), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_cell(cell, grid, memory_budget=None, map_shards=None):
    """Compute one cell: a list of result records (see its study's ``run``).

    ``memory_budget`` (bytes) shards each pretraining round's tasks to fit, and ``map_shards``
    runs the shards (see ``train.pretrain``); neither changes the records.
    """
    shard_options = {"memory_budget": memory_budget}
    if map_shards is not None:
        shard_options["map_shards"] = map_shards
    return STUDIES[cell.study].run(cell, grid, shard_options)


def peak_bytes(cell, grid, memory_budget=None):
    """Estimated peak memory of computing ``cell``: one shard's round (all its tasks when they
    fit in ``memory_budget``, see ``train.task_shards``), the layers, and the probes' samples."""
    study = STUDIES[cell.study]
    config = study.pretrain_config(cell, grid)
    shards = task_shards(study.tasks(cell, grid), config, cell.d, grid.r, memory_budget)
    largest_shard = max(count for _, count in shards)
    layers = study.probe_layers(cell, grid)
    sampler = config.sampler_at(cell.d, grid.r)
    probe_d = sampler.probe_dimension(cell.d, grid.r, layers * config.width)
    probes = grid.n_test * probe_d * 8 * 2 if layers else 0
    # Besides the shard: the layer and its gradient, and what the sampler holds (bases, draws).
    extra = sampler.extra_bytes(cell.d, grid.r, config.width, layers * config.width)
    return largest_shard * task_bytes(config, cell.d, grid.r) + 8 * config.width * cell.d * 4 + extra + probes


#: A cell holds at most this much by default: larger rounds are sharded. Shards of this size keep
#: the step's products efficient (1 GiB is ~800 tasks of 1000 samples at d = 200).
DEFAULT_MEMORY_BUDGET = 2**30


def default_memory_budget(jobs=1):
    """Bytes a cell may hold by default: 1 GiB, or less when half the available memory shared by
    ``jobs`` cells is less."""
    available = available_memory()
    if available is None:
        return DEFAULT_MEMORY_BUDGET
    return min(DEFAULT_MEMORY_BUDGET, available // (2 * max(1, jobs)))


def memory_problem(grid, jobs=1, memory_budget=None):
    """A sentence on why ``grid`` cannot fit in memory with ``jobs`` cells at once, or ``None``.

    Cells shard their tasks to fit ``memory_budget``; one that cannot fit even a single task
    (huge ``d`` or ``samples_per_task``) is the problem.
    """
    available = available_memory()
    if available is None:
        return None
    cells = plan(grid)
    largest = max(cells, key=lambda cell: peak_bytes(cell, grid, memory_budget))
    one = peak_bytes(largest, grid, memory_budget)
    need = one * min(jobs, len(cells))
    if need <= available:
        return None
    gib = 2.0**30
    return (
        f"the largest cell ({largest.key}) needs about {one / gib:.1f} GiB even one task at a time"
        + (f", {need / gib:.1f} GiB for {min(jobs, len(cells))} at once" if jobs > 1 else "")
        + f", and this machine has {available / gib:.1f} GiB available"
    )


def _cell_path(out, cell):
    return Path(out) / "cells" / f"{cell.key}.json"


def expected_records(cell, grid):
    """How many records ``cell`` yields."""
    return STUDIES[cell.study].records_per_cell(cell, grid)


def load_cell(out, cell, grid):
    """A finished cell's records, or ``None`` when it is missing, from other settings or malformed
    (see ``store.load_cell``)."""
    study = STUDIES[cell.study]
    return store.load_cell(
        _cell_path(out, cell), cell, fingerprint(cell, grid), expected_records(cell, grid), study.fields, study.finite
    )


def needs_shards(cell, grid, memory_budget):
    """Whether ``cell``'s pretraining rounds exceed ``memory_budget`` and run in shards of tasks."""
    study = STUDIES[cell.study]
    return (
        len(task_shards(study.tasks(cell, grid), study.pretrain_config(cell, grid), cell.d, grid.r, memory_budget)) > 1
    )


def _compute(cell, grid, threads=1, memory_budget=None, map_shards=None, out=None):
    """Run one cell with ``threads`` threads (kernels and BLAS); returns what the store keeps. The
    pretrained networks the cell reads are kept in (and looked up in) ``out``'s networks folder."""
    from .. import num_threads

    start = time.perf_counter()
    folder = None if out is None else Path(out) / networks.FOLDER
    with num_threads(threads), clock.recording() as timed, networks.kept_in(folder), networks.counting() as counts:
        records = run_cell(cell, grid, memory_budget, map_shards)
    seconds = time.perf_counter() - start
    return {
        "cell": asdict(cell),
        "fingerprint": fingerprint(cell, grid),
        "settings": _settings_of(cell, grid),
        "seconds": seconds,
        "parts": clock.with_other(timed.parts, seconds),
        "threads": threads,
        "blas": blas_in_use(),
        "memory_budget": memory_budget,
        "networks": counts,
        "records": records,
    }


def _store(out, cell, payload):
    store.write_text_atomically(_cell_path(out, cell), json.dumps(payload, indent=1))


#: SIGINT or SIGTERM during a run (re-exported: it is part of this module's interface).
Stopped = store.Stopped


def run_grid(grid, out, jobs=1, progress=True, threads=1, memory_budget=None, scheduler=None, scheduler_file=None):
    """Compute every cell of ``grid`` not already finished in ``out``; return all records.

    Parameters
    ----------
    grid : Grid
    out : path
        Output folder; ``out/cells`` holds one file per finished cell, written here as each
        cell's result arrives (never by a worker: workers need no shared filesystem).
    jobs : int
        Cells computed at once, each in its own process (1: in this process).
    progress : bool
    threads : int
        Threads of each cell's kernels and BLAS. Records are bitwise identical for the same
        ``threads`` (and BLAS build), whatever ``jobs``, ``memory_budget`` or engine.
    memory_budget : int, optional
        Bytes each cell may hold: pretraining shards its tasks to fit (see ``train.pretrain``).
    scheduler, scheduler_file : str, optional
        A Dask scheduler's address, or its scheduler file: the cells run on that cluster
        (``jobs`` is then the cluster's business), a cell too large for ``memory_budget`` shard by
        shard across its workers. Checked before anything is written.

    Returns
    -------
    dict
        Each study's records by its name (``{"recovery": [...], "downstream": [...]}``), in plan
        order.

    Raises
    ------
    Stopped
        SIGINT or SIGTERM: workers ended, finished cells stored; run again to resume.
    engines.WorkerDied
        A local worker process was killed; finished cells stored.
    engines.ClusterError
        The cluster cannot be reached or cannot run the cells (before anything is written), or a
        cell failed there.
    store.OutputLocked
        Another run is writing into ``out``.
    """
    with _session(out, scheduler, scheduler_file) as client:
        return _run_cells(grid, Path(out), jobs, progress, threads, memory_budget, client)[0]


@contextmanager
def _session(out, scheduler, scheduler_file):
    """One run's hold on ``out``: the cluster's client (``None`` without a scheduler; checked
    before anything is written), the folder's lock and the signal handling, for the whole block."""
    out = Path(out)
    client = engines.connect(scheduler, scheduler_file) if scheduler or scheduler_file else None
    try:
        (out / "cells").mkdir(parents=True, exist_ok=True)
        with store.locked(out), store.stop_on_signals():
            yield client
    finally:
        if client is not None:
            client.close()


def _run_cells(grid, out, jobs, progress, threads, memory_budget, client):
    """``run_grid``'s work, with the lock on ``out`` and the signal handling already in place;
    returns its records and the cells' profile (see :func:`profile`)."""
    store.clean_up_after_killed_runs(out)
    cells = plan(grid)
    results = {cell: load_cell(out, cell, grid) for cell in cells}
    timings = {cell: _stored_timing(out, cell) for cell in cells if results[cell] is not None}
    todo = [cell for cell in cells if results[cell] is None]
    bar = Progress(len(todo), enabled=progress)
    if progress:
        print(
            f"{len(cells)} cells, {len(cells) - len(todo)} already done in {out}, {len(todo)} to run", file=bar.stream
        )
    compute = partial(_compute, grid=grid, threads=threads, memory_budget=memory_budget, out=out)
    if client is None and jobs > 1 and len(todo) > 1:
        warm_up(grid)  # here, once: the workers then load the kernels from the cache
    if client is not None:
        sharded = [cell for cell in todo if needs_shards(cell, grid, memory_budget)]
        engine = engines.on_cluster(client, compute, todo, sharded=sharded, threads=threads)
    elif jobs > 1 and len(todo) > 1:
        engine = engines.process_pool(compute, todo, jobs)
    else:
        engine = engines.in_process(compute, todo)
    try:
        with closing(engine):
            for cell, payload in engine:
                _store(out, cell, payload)
                results[cell] = payload["records"]
                timings[cell] = _timing(payload)
                bar.step(f"{cell.key} ({payload['seconds']:.1f}s)")
    except (engines.WorkerDied, engines.ClusterError) as error:
        raise type(error)(
            f"{error}; every finished cell is stored in {out / 'cells'}: run the same command "
            "again to resume"
            + (", with fewer --jobs if memory ran out" if isinstance(error, engines.WorkerDied) else "")
        ) from None
    gathered = {name: [] for name in grid.studies}
    for cell in cells:
        gathered[cell.study].extend(results[cell])
    return gathered, profile(timings.values())


def warm_up(grid):
    """Compile (or load from Numba's disk cache) the kernels that ``grid``'s cells use, by running
    a tiny cell of the same dtype, layout and loss here. Worker processes started after it load
    the kernels from the cache instead of each compiling them at once."""
    tiny = replace(grid, r=1, pretrain=replace(grid.pretrain, width=2, samples_per_task=4))
    with clock.recording():  # not this run's time
        run_cell(Cell("recovery", 2, 0, T=2), tiny)
        normals((0, 0, 0, 0), 1, 4)  # the reduced sampler's float64 normals (the shared layout's kernel)


def _timing(payload):
    """``(seconds, parts, networks)`` of a cell's payload (``networks``: what it trained and reused)."""
    networks_used = {name: int(v) for name, v in payload.get("networks", {}).items()}
    return float(payload["seconds"]), {name: float(v) for name, v in payload["parts"].items()}, networks_used


def _stored_timing(out, cell):
    """:func:`_timing` of a stored cell, or ``None`` (a cell stored without its timing)."""
    try:
        return _timing(json.loads(_cell_path(out, cell).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def profile(timings):
    """Where the cells' time went: ``{"cells", "seconds", "parts": {part: seconds}, "networks":
    {"trained": k, "reused": j}}`` summed over the :func:`_timing` of each cell that recorded it (see
    ``mtrl_fast.paper.clock`` and ``mtrl_fast.paper.networks``)."""
    known = [timing for timing in timings if timing is not None]
    parts = {name: sum(timing[1].get(name, 0.0) for timing in known) for name in clock.PARTS}
    used = {name: sum(timing[2].get(name, 0) for timing in known) for name in ("trained", "reused")}
    return {"cells": len(known), "seconds": sum(timing[0] for timing in known), "parts": parts, "networks": used}


def reproduce(grid, out, jobs=1, progress=True, threads=1, memory_budget=None, scheduler=None, scheduler_file=None):
    """Run ``grid`` into ``out`` (resuming), then write results, CSVs, figures and the report.

    One lock on ``out`` and one signal handler cover the whole run, from the first cell to the
    last output: a stop during the report publishes nothing and leaves the previous outputs whole.

    Returns
    -------
    list of dict
        The paper's claims with their measured numbers and verdicts (see ``report.claims``).
    """
    from . import report

    with _session(out, scheduler, scheduler_file) as client:
        results, timing = _run_cells(grid, Path(out), jobs, progress, threads, memory_budget, client)
        return report.write_outputs(results, grid, Path(out), profile=timing)
