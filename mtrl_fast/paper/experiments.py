"""The paper's reproduction grid: seeded, independent cells written atomically; results, figures, report.

A run is the cells of the studies its grid names (:mod:`mtrl_fast.paper.studies`: recovery,
downstream, width), each study owning what its cells compute and what the report says of them;
this module only orchestrates. Each cell draws from its own seed, so cells can run in any order or
in parallel, and each is written to ``DIR/cells/`` as soon as it finishes: a killed run resumes
where it stopped, and a finished cell is never computed again (unless its settings changed).
"""

import json
import time
from contextlib import closing, contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path

from .._platform import blas_in_use
from .._progress import Progress
from . import clock, engines, networks, samplers, store
from .grid import PARAMETERS, QUICK, Grid, fingerprint, plan, settings_of
from .memory import DEFAULT_MEMORY_BUDGET, default_memory_budget, memory_problem, needs_shards, peak_bytes
from .studies import STUDIES, Cell

# What the command and the tests take from here, defined in the grid and memory modules.
__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "Cell",
    "PARAMETERS",
    "QUICK",
    "Grid",
    "default_memory_budget",
    "fingerprint",
    "memory_problem",
    "peak_bytes",
    "plan",
    "reproduce",
    "run_cell",
    "run_grid",
    "settings_of",
]


def run_cell(cell, grid, memory_budget=None, map_shards=None):
    """Compute one cell: a list of result records (see its study's ``run``).

    ``memory_budget`` (bytes) shards each pretraining round's tasks to fit, and ``map_shards``
    runs the shards (see ``train.pretrain``); neither changes the records.
    """
    shard_options = {"memory_budget": memory_budget}
    if map_shards is not None:
        shard_options["map_shards"] = map_shards
    return STUDIES[cell.study].run(cell, grid, shard_options)


def _cell_path(out, cell):
    return Path(out) / "cells" / f"{cell.name}.json"


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
        "cell": cell.stored(),
        "fingerprint": fingerprint(cell, grid),
        "settings": settings_of(cell, grid),
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
    if client is None and todo:
        # Here, once: the cells then load the kernels from the cache.
        warm_up(grid, threads, tiny_cell=jobs > 1 and len(todo) > 1)
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
                bar.step(f"{cell.name} ({payload['seconds']:.1f}s)")
    except (engines.WorkerDied, engines.ClusterError) as error:
        raise type(error)(
            f"{error}; every finished cell is stored in {out / 'cells'}: run the same command "
            "again to resume"
            + (", with fewer --jobs if memory ran out" if isinstance(error, engines.WorkerDied) else "")
        ) from None
    finally:
        if client is None:  # this machine's workers have ended: a network one was writing is a part file
            store.remove_temporary_files(out / networks.FOLDER)
    gathered = {name: [] for name in grid.studies}
    for cell in cells:
        gathered[cell.study].extend(results[cell])
    return gathered, profile(timings.values())


def kernel_builds(grid, threads=1):
    """The kernel builds ``grid``'s cells call: each layout's step passes and the draws of every
    sampler its cells run on (the registry says which), in the grid's float type (and the
    samplers' own), serial twins only where the cells run on one thread."""
    from .._kernels import _compile
    from ..ops import STEP_PASSES

    config = grid.pretrain
    wanted = [(name, config.dtype) for name in STEP_PASSES[config.layout]]
    for sampler in {
        samplers.choose(config.sampler, config.layout, cell.d, grid.r, config.width) for cell in plan(grid)
    }:
        wanted.extend(sampler.kernels(config.layout, config.dtype))
    twins = ("serial",) if threads == 1 else _compile.TWINS
    return [build for name, dtype in dict.fromkeys(wanted) for build in _compile.builds([name], twins, [dtype])]


def warm_up(grid, threads=1, tiny_cell=False):
    """Compile the kernels that ``grid``'s cells call (:func:`kernel_builds`) into Numba's disk
    cache, on every core at once (``_kernels._compile.precompile``). With ``tiny_cell``, also run,
    here, the pretraining every study runs, at no size, in the grid's dtype, layout, loss and
    sampler setting, which compiles the helpers it calls from Python and anything the registries did
    not name: the pool's workers, started next, then all load them from the cache instead of each
    compiling them at once."""
    import numpy as np

    from .._kernels import _compile
    from .metrics import subspace_distance
    from .tasks import make_task_family
    from .train import pretrain

    _compile.precompile(kernel_builds(grid, threads))
    if tiny_cell:
        rng = np.random.default_rng(0)
        family = make_task_family(2, 1, 2, rng, kind=grid.label_kind, noise=grid.noise)
        with clock.recording():  # not this run's time
            trained = pretrain(family, replace(grid.pretrain, width=2, samples_per_task=4), rng)
            subspace_distance(trained.W, family.M)


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
