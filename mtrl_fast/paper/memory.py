"""How much memory a cell needs, and the budget it runs within: the estimates ``reproduce`` checks
before any work starts and the shards of tasks a cell's rounds are split into."""

from .._platform import available_memory
from .grid import plan
from .shards import task_bytes, task_shards
from .studies import STUDIES


def peak_bytes(cell, grid, memory_budget=None):
    """Estimated peak memory of computing ``cell``: one shard's round (all its tasks when they
    fit in ``memory_budget``, see ``shards.task_shards``), the layers, and the probes' samples."""
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
        f"the largest cell ({largest.name}) needs about {one / gib:.1f} GiB even one task at a time"
        + (f", {need / gib:.1f} GiB for {min(jobs, len(cells))} at once" if jobs > 1 else "")
        + f", and this machine has {available / gib:.1f} GiB available"
    )


def needs_shards(cell, grid, memory_budget):
    """Whether ``cell``'s pretraining rounds exceed ``memory_budget`` and run in shards of tasks."""
    study = STUDIES[cell.study]
    return (
        len(task_shards(study.tasks(cell, grid), study.pretrain_config(cell, grid), cell.d, grid.r, memory_budget)) > 1
    )
