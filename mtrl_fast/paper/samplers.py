"""How a pretraining round draws its samples: one object per sampler, in :data:`SAMPLERS`.

A sampler says which coordinates a round draws its inputs in, turns the gradient computed there
into the first layer's gradient in ``R^d``, says how a cell's probes see the trained layers, what
memory it needs beyond a shard, whether ``auto`` should take it for a cell, and what the report
says of it. Training (``train.pretrain``), the memory model (``memory.peak_bytes``), the
studies' probes (``studies._common.seen_by``) and the report read it from here; a new sampler is
its class and one entry in :data:`SAMPLERS`, and the command line's ``--sampler`` choices and help
come from it (:func:`choices`, :func:`option_help`).
"""

import numpy as np

from ..losses import LAYOUTS, PER_TASK
from . import clock
from .keys import Phase
from .reduction import joint_coordinates, outside_term, sampled_basis

#: The setting that picks a sampler per cell (see :func:`choose`).
AUTO = "auto"
#: ``auto`` takes the reduced sampler when its basis has at most this fraction of ``d`` columns:
#: measured, it then costs less than the full one (docs/performance.md, "Samplers").
REDUCED_MAX_FRACTION = 2 / 3


class Full:
    """Every input drawn in all ``d`` coordinates."""

    name = "full"
    layouts: tuple[str, ...] = LAYOUTS
    #: Why a layout outside ``layouts`` is refused (``PretrainConfig`` raises it).
    layout_error = "this sampler does not run in that layout"
    needs_gram = False
    note = "every input drawn in all d coordinates"
    #: What ``--sampler`` says of it, and when ``auto`` takes it (see :meth:`pays`).
    help = "inputs in all d coordinates"
    auto_rule = "elsewhere"

    def dimension(self, d, r, width):
        """Coordinates drawn per sample."""
        return d

    def pays(self, layout, d, r, width):
        """Whether ``auto`` takes this sampler for a cell in one of its ``layouts`` (the full one is
        what it falls back to)."""
        return True

    def round_coordinates(self, family, W, dtype):
        """``(family, W, basis)`` as the round draws and steps in them."""
        return family, W, None

    def first_layer_gradient(self, gW, gram, basis, key):
        """The first layer's gradient in ``R^d`` from the round's ``gW`` (and ``D^T D``)."""
        return gW

    def measured(self, task_family, layers):
        """``(task_family, layers)`` as a cell's probes see them (name -> ``(W, b)``)."""
        return task_family, layers

    def extra_bytes(self, d, r, width, probe_width):
        """Memory beyond a shard's and the layer's: bases and draws (none here)."""
        return 0

    def probe_dimension(self, d, r, probe_width):
        """Coordinates of a probe's samples, for layers of ``probe_width`` neurons in all."""
        return d

    def kernels(self, layout, dtype):
        """The compiled draws a round calls, as ``(kernel name, float type)`` (a run compiles them
        ahead: ``experiments.warm_up``)."""
        return [("draw_per_task" if layout == PER_TASK else "draw_shared", dtype)]


class Reduced(Full):
    """Only the coordinates ``c = Q^T x`` of every input in an orthonormal basis ``Q (d, k)`` of
    ``span(M) + span(W^T)``, ``k <= r + m``; the rest of the first layer's gradient, ``D^T X_perp``,
    is drawn from its exact conditional law ``N(0, D^T D)`` projected off ``span(Q)`` (see
    ``train.pretrain`` and ``reduction``). Every reported quantity keeps its distribution."""

    name = "reduced"
    layouts = (PER_TASK,)
    needs_gram = True
    note = (
        "the reduced sampler draws the inputs in a basis of span(M) + span(W^T) and the rest of the first "
        "layer's gradient from its exact conditional law: every reported quantity has the full sampler's "
        "distribution"
    )
    help = "only in a basis of span(M) + span(W^T), the rest of the gradient drawn from its exact law (per-task layout)"
    auto_rule = f"where d >= {1 / REDUCED_MAX_FRACTION:g} (r + width), where it is the cheaper"
    layout_error = (
        "the reduced sampler needs layout 'per-task': in the shared layout one X serves every "
        "task, so its cost does not grow with T and the full sampler is the one to use"
    )

    def dimension(self, d, r, width):
        return min(d, r + width)

    def pays(self, layout, d, r, width):
        return r + width <= REDUCED_MAX_FRACTION * d

    def round_coordinates(self, family, W, dtype):
        Q = sampled_basis(family.M, W)
        return family.in_coordinates(Q.T @ family.M), (W.astype(np.float64) @ Q).astype(dtype), Q

    def first_layer_gradient(self, gW, gram, basis, key):
        with clock.part("sampling"):
            outside = outside_term(gram, basis, key.at(phase=Phase.OUTSIDE))
        outside += gW.astype(np.float64) @ basis.T
        return outside.astype(gW.dtype)

    def measured(self, task_family, layers):
        # In the joint coordinates of M and all the layers, which carry M^T x and every W x with
        # their joint law.
        M, reduced = joint_coordinates(task_family.M, *(W for W, _ in layers.values()))
        return task_family.in_coordinates(M), {name: (W, b) for (name, (_, b)), W in zip(layers.items(), reduced)}

    def extra_bytes(self, d, r, width, probe_width):
        # The round's and the probes' bases and the outside term's draws, in float64.
        return 4 * (r + 2 * width) * d * 8 + 3 * self.probe_dimension(d, r, probe_width) * d * 8

    def probe_dimension(self, d, r, probe_width):
        return min(d, r + probe_width)

    def kernels(self, layout, dtype):
        # The outside term's normals: the shared layout's draw, in float64.
        return [*super().kernels(layout, dtype), ("draw_shared", "float64")]


#: Every sampler, by name; ``auto`` prefers them in reverse order (the cheapest that pays).
SAMPLERS = {sampler.name: sampler for sampler in (Full(), Reduced())}


def choices():
    """The settings a pretraining accepts: ``auto`` and every sampler's name."""
    return (AUTO, *SAMPLERS)


def option_help():
    """``--sampler``'s help, from the registry: each sampler's ``help``, and the rule ``auto`` follows."""
    rule = ", ".join(f"{s.name} {s.auto_rule}" for s in reversed(SAMPLERS.values()))
    return "; ".join([*(f"{s.name}: {s.help}" for s in SAMPLERS.values()), f"{AUTO} (default): {rule}"])


def choose(setting, layout, d, r, width):
    """The sampler ``setting`` runs a cell at ``(d, r)`` on: itself, or for ``auto`` the last of
    :data:`SAMPLERS` that pays there (the reduced one in the per-task layout when its basis, at
    most ``r + width`` columns, is at most :data:`REDUCED_MAX_FRACTION` of ``d``)."""
    if setting != AUTO:
        return SAMPLERS[setting]
    return next(s for s in reversed(SAMPLERS.values()) if layout in s.layouts and s.pays(layout, d, r, width))
