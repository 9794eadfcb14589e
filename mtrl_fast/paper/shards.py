"""How a round's tasks are split to bound its memory, and what fixes its bits: a task's memory in a
round, the shards of tasks a budget allows, the fixed groups whose gradients are summed in task
order, and the fixed slices a task's samples are drawn in. ``train`` runs rounds this way and
``memory`` sizes cells with it.
"""

import numpy as np

from ..losses import PER_TASK


def task_bytes(config, d, r):
    """Peak memory one task adds to a round: its slice of samples (one phase at a time), the step's
    share of pre-activations, labels and their projections."""
    itemsize = np.dtype(config.dtype).itemsize
    n = config.samples(d)
    k = config.sampled_dimension(d, r)
    inputs = min(n, slice_rows(k)) * k * itemsize if config.layout == PER_TASK else 0
    return int(1.5 * inputs) + n * (2 * itemsize + 8 * 8) + 4 * config.width * itemsize


#: Values of one task's inputs drawn at once in the per-task layout: a task's ``n`` rows are drawn
#: and stepped through in fixed slices of ``SLICE_VALUES // k`` rows (``k`` coordinates each), so a
#: round's memory stays bounded at any ``n``. Fixed, like the groups: part of the fingerprint.
SLICE_VALUES = 2**22


def slice_rows(k):
    """Rows of a task drawn at once when each has ``k`` coordinates (see :data:`SLICE_VALUES`)."""
    return max(1, SLICE_VALUES // k)


def row_slices(n, k):
    """``(row0, rows)`` of each slice of a task's ``n`` samples of ``k`` coordinates."""
    step = slice_rows(k)
    return [(row0, min(step, n - row0)) for row0 in range(0, n, step)]


#: Tasks whose gradients one kernel call sums. A round's first-layer gradient is the sum of these
#: groups' gradients, added in task order: shards are unions of whole groups, so the result does
#: not depend on how the tasks are sharded (the memory budget, the engine, the free memory), only
#: on this constant, which is part of every cell's fingerprint.
GROUP_TASKS = 16


def task_groups(first, count):
    """``(first, count)`` of each fixed group of :data:`GROUP_TASKS` tasks in ``first .. first + count``
    (``first`` a multiple of the group size)."""
    return [(start, min(GROUP_TASKS, first + count - start)) for start in range(first, first + count, GROUP_TASKS)]


def task_shards(T, config, d, r, memory_budget=None):
    """``(first, count)`` of each shard of the ``T`` tasks: all at once when their round fits in
    ``memory_budget`` bytes (or no budget is given), else as many whole groups of
    :data:`GROUP_TASKS` as fit, at least one."""
    if memory_budget is None:
        size = T
    else:
        groups = max(1, int(memory_budget // (task_bytes(config, d, r) * GROUP_TASKS)))
        size = min(T, groups * GROUP_TASKS)
    return [(first, min(size, T - first)) for first in range(0, T, size)]
