"""Alternating multi-task pretraining on the fast kernels, and the baselines it is compared with.

Every gradient here comes from :func:`mtrl_fast.loss_and_grad`; this module only draws samples,
takes steps and keeps the history.
"""

from dataclasses import asdict, dataclass, field
from functools import partial

import numpy as np

from .. import loss_and_grad, rounds
from ..losses import DTYPES, LAYOUTS, LOSSES, PER_TASK, loss_id
from . import clock
from .keys import DrawKey, Phase
from .metrics import energy_outside, subspace_distance
from .options import setting
from .samplers import AUTO, SAMPLERS, choices, choose, option_help
from .shards import GROUP_TASKS, row_slices, task_groups, task_shards
from .tasks import unit_vectors


@dataclass(frozen=True)
class PretrainConfig:
    """Settings of alternating pretraining (heads first, then the shared layer).

    Attributes
    ----------
    width : int
        Neurons ``m``.
    rounds : int
        Rounds of (head steps, one first-layer step), each on fresh samples.
    head_steps : int
        Head steps per round, each task's head on its own mean loss.
    head_lr : float
        Head step size.
    lr : float
        First-layer step size ``eta_W``.
    weight_decay : float
        ``lambda``: the first-layer step is ``W <- (1 - eta_W lambda) W - eta_W grad``; with
        ``rounds = 1`` and ``eta_W lambda = 1`` this is the one-large-step variant.
    loss : str
        One of ``mtrl_fast.LOSSES``.
    samples_per_task : int or None
        ``n1 = n2``, fresh samples per task for each head phase and each first-layer step;
        ``None`` means ``5 d``.
    layout : {"per-task", "shared"}
        Each task its own samples (the paper's setting), or one sample set labelled by all.
    bias : bool
        Train a first-layer bias (starts at zero).
    init_scale : float
        Norm of each initial row of ``W`` (rows uniform on the sphere).
    dtype : {"float32", "float64"}
    sampler : str
        How each round's samples are drawn: ``"auto"`` or a sampler's name in
        ``mtrl_fast.paper.samplers.SAMPLERS`` (each says which layouts it serves). The two give every reported quantity the same distribution, not the
        same draws.
    """

    # The settings ``mtrl-fast reproduce`` takes (see mtrl_fast.paper.options): flags and help come from here.
    width: int = setting(256, "positive_int", "neurons m")
    rounds: int = setting(1, "positive_int", "alternating rounds", default_text="1: one large step")
    head_steps: int = setting(1, "positive_int", "head steps per round")
    head_lr: float = setting(0.1, "positive_float", "head step size")
    lr: float = setting(1.0, "positive_float", "first-layer step size")
    weight_decay: float = setting(1.0, "nonnegative_float", "first-layer weight decay lambda")
    loss: str = setting("correlation", "choice", "the training loss", choices=LOSSES)
    samples_per_task: int | None = setting(None, "positive_int", "n1 = n2 per task per phase", default_text="5 d")
    layout: str = setting(
        PER_TASK, "choice", "each task its own samples, or one sample set labelled by every task", choices=LAYOUTS
    )
    bias: bool = False
    init_scale: float = 1.0
    dtype: str = "float32"
    sampler: str = setting(AUTO, "choice", option_help, choices=choices, default_text="")

    def __post_init__(self):
        loss_id(self.loss)
        for name in ("width", "rounds", "head_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1; got {getattr(self, name)}")
        if self.samples_per_task is not None and self.samples_per_task < 1:
            raise ValueError(f"samples_per_task must be at least 1; got {self.samples_per_task}")
        for name in ("head_lr", "lr", "init_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive; got {getattr(self, name)}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be non-negative; got {self.weight_decay}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}; got {self.layout!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}; got {self.dtype!r}")
        if self.sampler != AUTO and self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {choices()}; got {self.sampler!r}")
        if self.sampler in SAMPLERS and self.layout not in SAMPLERS[self.sampler].layouts:
            raise ValueError(SAMPLERS[self.sampler].layout_error)

    def samples(self, d):
        """Samples per task per phase for input dimension ``d``."""
        return self.samples_per_task or 5 * d

    def sampler_at(self, d, r):
        """The sampler object a cell at ``(d, r)`` runs (``samplers.choose``: ``auto`` takes the
        reduced one in the per-task layout where its basis is small enough against ``d``)."""
        return choose(self.sampler, self.layout, d, r, self.width)

    def sampler_for(self, d, r):
        """The name of the sampler a cell at ``(d, r)`` runs (see :meth:`sampler_at`)."""
        return self.sampler_at(d, r).name

    def sampled_dimension(self, d, r):
        """Coordinates of each drawn input: ``d``, or the reduced basis's ``min(d, r + width)``."""
        return self.sampler_at(d, r).dimension(d, r, self.width)

    def to_dict(self):
        return asdict(self)


@dataclass
class Pretrained:
    """A trained first layer, the task heads, and what happened on the way."""

    W: np.ndarray
    b: np.ndarray | None
    A: np.ndarray
    history: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class Order:
    """When, within a round, the heads move against the shared layer's step: a named choice of
    :func:`pretrain` (the ablation study compares them at the same budget of samples and steps).

    Attributes
    ----------
    name : str
    heads_move : bool
        The heads take their steps; ``False`` keeps them at their initial draw.
    layer_sees_new_heads : bool
        The layer's gradient is taken at the heads the round's head steps reached (the paper's
        order); ``False`` takes it at the heads the round started from, as one joint step of
        both would.
    heads_in_first_round : bool
        ``False``: the first round's layer step comes before any head step, and every later
        round is heads-first. The first layer then sees the sequence layer, heads, layer, heads,
        ...: the shared layer first in every round (a last head step after the last layer step
        would change no first layer).
    """

    name: str
    heads_move: bool = True
    layer_sees_new_heads: bool = True
    heads_in_first_round: bool = True

    def heads_step(self, round_index):
        """Whether the heads take their steps in round ``round_index``."""
        return self.heads_move and (round_index > 0 or self.heads_in_first_round)


HEADS_FIRST = "heads-first"
#: The orders :func:`pretrain` runs, by name: the paper's (heads, then the shared layer), a joint
#: step (both gradients at the round's starting point), the shared layer first, frozen heads.
ORDERS = {
    order.name: order
    for order in (
        Order(HEADS_FIRST),
        Order("joint", layer_sees_new_heads=False),
        Order("layer-first", heads_in_first_round=False),
        Order("frozen-heads", heads_move=False),
    )
}


def initial_layer(width, d, rng, scale=1.0, dtype="float32"):
    """First layer with rows drawn uniformly from the sphere of radius ``scale``."""
    return (scale * unit_vectors(width, d, rng)).astype(dtype)


def oracle_layer(width, M, rng, dtype="float32"):
    """First layer whose rows are uniform unit vectors inside ``span(M)``."""
    return (unit_vectors(width, M.shape[1], rng) @ M.T).astype(dtype)


def shard_round(family, config, key, shard, W, b, A, n=None, gram=False, heads_step=True, layer_sees_new_heads=True):
    """One round's work for the tasks of one shard, on samples drawn here (``sample_tasks``) under
    ``key``, the round's :class:`~mtrl_fast.paper.keys.DrawKey` (each phase its own draw).

    Takes the shard's heads ``A (count, m)`` through ``head_steps`` steps (they need nothing from
    other tasks), then returns ``(A, groups, parts)``: the new heads, for each group of
    :data:`~mtrl_fast.paper.shards.GROUP_TASKS` tasks in the shard ``(value, gW, gb, gram)``, the
    objective and first-layer gradients of the group's own mean loss on fresh samples (and, with
    ``gram``, the Gram matrix ``D^T D`` of its pre-activations' gradients, else ``None``), and the
    seconds spent sampling and in the kernels (``clock`` parts). ``n`` is the samples per task (default
    ``config.samples(family.d)``). ``heads_step`` and ``layer_sees_new_heads`` come from the
    round's :class:`Order`: without the first the heads stay, without the second the layer's
    gradient is taken at the heads the shard came with.
    """
    n = config.samples(family.d) if n is None else n
    A = A.copy()
    with clock.recording() as timed:  # returned: the shard may run in another process
        if config.layout == PER_TASK:
            groups = _per_task_groups(family, config, key, shard, W, b, A, n, gram, heads_step, layer_sees_new_heads)
        else:
            groups = _shared_groups(family, config, key, shard, W, b, A, n, heads_step, layer_sees_new_heads)
    return A, groups, timed.parts


def _per_task_groups(family, config, key, shard, W, b, A, n, gram, heads_step, layer_sees_new_heads):
    """Each group's own samples, drawn slice by slice of rows
    (:func:`~mtrl_fast.paper.shards.row_slices`) into one reused buffer (no fresh pages per group):
    its heads' steps, then its first-layer gradient on fresh samples. A slice's mean gradients enter with weight ``rows / n``, its Gram matrix with the
    square of it."""
    first, count = shard
    dtype = np.dtype(config.dtype)
    slices = row_slices(n, family.d)
    size = min(GROUP_TASKS, count)
    buffer = (np.empty((size, slices[0][1], family.d), dtype=dtype), np.empty((size, slices[0][1]), dtype=dtype))

    def draw(start, size, row0, rows, phase):
        with clock.part("sampling"):
            out = (buffer[0][:size, :rows], buffer[1][:size, :rows]) if rows == slices[0][1] else None
            return family.sample_tasks(start, size, rows, key.at(phase=phase), PER_TASK, dtype, out=out, row0=row0)

    groups = []
    for start, size in task_groups(first, count):
        heads = A[start - first : start - first + size]
        layer_heads = heads if layer_sees_new_heads else heads.copy()  # the steps below move heads in place
        drawn = None
        for _ in range(config.head_steps if heads_step else 0):
            gA = np.zeros_like(heads)
            for row0, rows in slices:
                if drawn is None or len(slices) > 1:  # one slice is drawn once for every step
                    drawn = draw(start, size, row0, rows, Phase.HEADS)
                with clock.part("kernels"):
                    _, grads = loss_and_grad(*drawn, W, b, heads, config.loss, check_finite=False, first_layer=False)
                    gA += dtype.type(rows / n) * grads.A
            with clock.part("kernels"):
                heads -= dtype.type(config.head_lr * size) * gA  # each head on its own task's mean loss
        value, gW, gb, DtD = 0.0, np.zeros_like(W), None if b is None else np.zeros_like(b), None
        for row0, rows in slices:
            X, Y = draw(start, size, row0, rows, Phase.FIRST_LAYER)
            with clock.part("kernels"):
                part_value, grads = loss_and_grad(X, Y, W, b, layer_heads, config.loss, check_finite=False, gram=gram)
                weight = rows / n
                value += weight * part_value
                gW += dtype.type(weight) * grads.W
                if gb is not None:
                    gb += dtype.type(weight) * grads.b
                if gram:
                    DtD = weight**2 * grads.gram if DtD is None else DtD + weight**2 * grads.gram
        groups.append((value, gW, gb, DtD))
    return groups


def _shared_groups(family, config, key, shard, W, b, A, n, heads_step, layer_sees_new_heads):
    """The shared layout: one ``X`` per phase, labelled by every task of the shard; the steps by group."""
    first, count = shard
    layer_heads = A if layer_sees_new_heads else A.copy()  # the steps below move A in place
    if heads_step:
        with clock.part("sampling"):
            X, Y = family.sample_tasks(first, count, n, key.at(phase=Phase.HEADS), config.layout, config.dtype)
        with clock.part("kernels"):
            for start, size in task_groups(first, count):
                rows = slice(start - first, start - first + size)
                rounds.step_heads(
                    X, Y[rows], W, b, A[rows], loss=config.loss, steps=config.head_steps, lr=config.head_lr
                )
    with clock.part("sampling"):
        X, Y = family.sample_tasks(first, count, n, key.at(phase=Phase.FIRST_LAYER), config.layout, config.dtype)
    groups = []
    with clock.part("kernels"):
        for start, size in task_groups(first, count):
            rows = slice(start - first, start - first + size)
            value, grads = loss_and_grad(X, Y[rows], W, b, layer_heads[rows], config.loss, check_finite=False)
            groups.append((value, grads.W, grads.b, None))
    return groups


def _in_process(function, argument_lists):
    """Run the shards here, one at a time as the caller takes their results."""
    return (function(*arguments) for arguments in argument_lists)


def pretrain(family, config, rng, W0=None, memory_budget=None, map_shards=_in_process, order=HEADS_FIRST, A0=None):
    """Alternating multi-task pretraining on ``family``'s tasks.

    Each round draws fresh samples, takes ``head_steps`` steps on every task's head (each on
    its own mean loss), then draws fresh samples again and takes one step on ``W`` (and ``b``)
    along the task-averaged gradient with weight decay.

    Each task's samples come from a generator keyed by the run's seed, the round, the phase and
    the task (``TaskFamily.sample_tasks``), so the tasks can be taken in shards, each drawing its
    own samples where it runs: a round then costs one shard's memory, not the whole batch's.
    The first-layer gradient is summed over fixed groups of :data:`~mtrl_fast.paper.shards.GROUP_TASKS` tasks in task
    order, so results are bitwise the same whatever the shards (the memory budget) and wherever
    they run, for the same thread count.

    The reduced sampler (``mtrl_fast.paper.samplers.Reduced``) draws, each round, only the
    coordinates ``c = Q^T x ~ N(0, I_k)`` of every input in an orthonormal basis ``Q (d, k)`` of
    ``span(M) + span(W^T)``, ``k <= r + m``. Labels, pre-activations, the objective, the heads'
    gradients and the pre-activations' gradients ``D`` depend on ``c`` alone; the rest of ``x``
    enters only ``gW = D^T X = (D^T C) Q^T + D^T X_perp``, and given ``D`` the columns of
    ``D^T X_perp`` are independent ``N(0, D^T D)`` vectors projected off ``span(Q)``: the term is
    drawn as ``L G (I - Q Q^T)`` with ``L L^T = D^T D`` (summed over every shard's tasks) and
    ``G`` an ``(m, d)`` standard normal matrix keyed by the seed and the round. Every quantity
    has the distribution it has under the full sampler, at a cost of ``T n k`` draws instead of
    ``T n d``.

    Parameters
    ----------
    family : mtrl_fast.paper.tasks.TaskFamily
    config : PretrainConfig
    rng : numpy.random.Generator
        Draws the initial layer and the samples' seed.
    W0 : ndarray, optional
        Initial first layer; drawn from ``rng`` by default.
    memory_budget : int, optional
        Bytes a round may hold; the tasks are sharded to fit (see :func:`~mtrl_fast.paper.shards.task_shards`).
    map_shards : callable, optional
        ``map_shards(shard_round_function, argument_lists) -> iterable of results in order``: runs
        the shards, in this process by default (a Dask client's ``map``, say, to run them on a
        cluster).
    order : str, default "heads-first"
        When the heads move against the shared layer's step (a name in :data:`ORDERS`): the
        paper's heads first, a joint step, the shared layer first, or frozen heads.
    A0 : ndarray, optional
        Initial heads ``(T, width)``; zeros by default.

    Returns
    -------
    Pretrained
        Parameters after training, and one history entry per round: the first-layer step's
        loss, subspace distance and energy outside ``span(M)`` after the step.
    """
    _check_pretrain(family, config, order, A0)
    dtype = np.dtype(config.dtype)
    W = initial_layer(config.width, family.d, rng, config.init_scale, dtype) if W0 is None else W0.astype(dtype)
    b = np.zeros(config.width, dtype=dtype) if config.bias else None
    A = np.zeros((family.T, config.width), dtype=dtype) if A0 is None else np.array(A0, dtype=dtype)
    seed = DrawKey.from_generator(rng)
    shards = task_shards(family.T, config, family.d, family.r, memory_budget)
    sampler = config.sampler_at(family.d, family.r)
    n = config.samples(family.d)
    history = []
    for round_index in range(config.rounds):
        key = seed.at(round=round_index)  # the round's draws; each phase moves it on
        drawn_family, drawn_W, basis = sampler.round_coordinates(family, W, dtype)
        plan = {
            "heads_step": ORDERS[order].heads_step(round_index),
            "layer_sees_new_heads": ORDERS[order].layer_sees_new_heads,
        }
        work = partial(shard_round, drawn_family, config, key, n=n, gram=sampler.needs_gram, **plan)
        results = map_shards(work, [((first, count), drawn_W, b, A[first : first + count]) for first, count in shards])
        value, gW, gb, DtD = _combined(shards, results, A, drawn_W, b, dtype, sampler.needs_gram)
        _finite_or_diverged(DtD, round_index)
        gW = sampler.first_layer_gradient(gW, DtD, basis, key)
        rounds.update_first_layer(W, b, gW, gb, lr=config.lr, weight_decay=config.weight_decay)
        _finite_or_diverged(W, round_index)
        with clock.part("metrics"):  # after the step
            history.append({"round": round_index, "loss": value, **_subspace_record(W, family.M)})
    return Pretrained(W=W, b=b, A=A, history=history)


def _check_pretrain(family, config, order, A0):
    if config.width < family.r:
        raise ValueError(f"width must be at least r = {family.r} to learn the subspace; got {config.width}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}; got {order!r}")
    if A0 is not None and np.shape(A0) != (family.T, config.width):
        raise ValueError(f"A0 must have shape (T, width) = {(family.T, config.width)}; got {np.shape(A0)}")


def _combined(shards, results, A, W, b, dtype, needs_gram):
    """The task average of the shards' results, in task order whatever the shards: ``(value, gW,
    gb, DtD)``; each shard's new heads go into ``A`` (``DtD``, for the reduced sampler, else ``None``)."""
    T, width = A.shape
    value, gW, gb = 0.0, np.zeros_like(W), None if b is None else np.zeros_like(b)
    DtD = np.zeros((width, width)) if needs_gram else None
    for (first, count), (heads, groups, parts) in zip(shards, results):
        clock.add_parts(parts)
        A[first : first + count] = heads
        for (_, size), (group_value, group_gW, group_gb, group_gram) in zip(task_groups(first, count), groups):
            weight = dtype.type(size / T)  # the group's share of the task average
            value += float(weight) * group_value
            gW += weight * group_gW
            if b is not None:
                gb += weight * group_gb
            if DtD is not None:
                DtD += float(weight) ** 2 * group_gram  # the groups' rows of D are disjoint
    return value, gW, gb, DtD


def _finite_or_diverged(array, round_index):
    if array is not None and not np.isfinite(array).all():
        raise FloatingPointError(f"training diverged in round {round_index}: lower lr or head_lr")


def _subspace_record(W, M):
    return {"subspace_distance": subspace_distance(W, M), "energy_outside": energy_outside(W, M)}
