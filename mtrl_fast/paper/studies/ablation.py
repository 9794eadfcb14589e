"""Ablation: the order of the updates. The paper's key insight is that taking each task's head step
*before* the shared layer's step makes the layer's gradient a pseudo-contrastive one (points whose
labels agree across tasks pulled together), which is what concentrates the features in
``span(M)``. This study trains the same tasks from the same start, with the same samples and steps,
in each order of ``train.ORDERS`` (heads first; a joint step, both gradients at the round's
starting point; the shared layer first; heads frozen at their initial draw) and measures each
first layer: subspace distance, energy outside ``span(M)``, alignment with cross-task label
agreement, and a probe's accuracy on new tasks.

Every order starts from the same first layer and the same heads, a small random draw (entries of
standard deviation ``1 / width``): near the paper's zero start, but with a gradient for the orders
whose first layer step comes before any head step (from zero heads it would have none). Frozen
heads keep that draw.
"""

import numpy as np

from ..alignment import feature_kernel, kernel_alignment
from ..keys import Salt
from ..metrics import probe_accuracy
from ..networks import family
from ..train import HEADS_FIRST, ORDERS, pretrain
from ._common import (
    PROBE_PARAMETERS,
    Cell,
    Parameter,
    Study,
    grid_values,
    markdown_table,
    mean,
    nearest,
    not_evaluated,
    saved,
    seen_by,
)
from .mechanism import AGREEMENT_TASKS, MECHANISM, held_out_agreement

#: The claim, stated from the insight before the study ran: heads first leaves at most this fraction
#: of the joint step's energy outside ``span(M)``, at every ``d`` (mean over seeds).
AT_MOST = 0.5
JOINT = "joint"
MEASURES = ("subspace_distance", "energy_outside", "alignment", "accuracy")
LABELS = {
    "subspace_distance": "subspace distance",
    "energy_outside": "energy outside span(M)",
    "alignment": "alignment with label agreement",
    "accuracy": "probe accuracy on new tasks",
}


class Ablation(Study):
    name = "ablation"
    title = "the order of the updates: heads first, a joint step, the shared layer first, frozen heads"
    fields = {"d": int, "order": str, "seed": int, **dict.fromkeys(MEASURES, float)}
    finite = frozenset(MEASURES)
    parameters = (
        Parameter(
            "ablation_d",
            "ints",
            (100, 1000),
            "input dimensions of the ablation study",
            at_least_r=True,
            coordinate=True,
        ),
        Parameter("ablation_tasks", "int", 100, "T of the ablation study's networks"),
        *PROBE_PARAMETERS,
        *MECHANISM.parameters,
    )

    def cells(self, grid):
        cells = [Cell(self.name, d, s) for d in grid.ablation_d for s in range(grid.seeds)]
        return sorted(cells, key=lambda c: (c.d, c.repetition))

    def records_per_cell(self, cell, grid):
        return len(ORDERS)

    def settings(self, grid):
        return {**super().settings(grid), "orders": list(ORDERS), "agreement_tasks": AGREEMENT_TASKS}

    def tasks(self, cell, grid):
        return grid.ablation_tasks

    def probe_layers(self, cell, grid):
        return len(ORDERS)

    def run(self, cell, grid, shard_options):
        config = grid.pretrain
        key = cell.random_key(grid)
        tasks = family(grid, key, grid.ablation_tasks)
        heads = key.generator(Salt.ABLATION_HEADS).standard_normal((grid.ablation_tasks, config.width)) / config.width
        layers, last = {}, {}
        for order in ORDERS:
            # The same generator for every order: the same first layer and the same samples.
            trained = pretrain(tasks, config, key.generator(Salt.ABLATION), order=order, A0=heads, **shard_options)
            layers[order] = (trained.W, trained.b)
            last[order] = trained.history[-1]  # its distance and energy, measured after the last step
        measured, layers_seen = seen_by(cell, grid, config, tasks, layers)
        X, agreement = held_out_agreement(grid, key, measured)
        n_new = nearest(grid.n_new, 100)
        records = []
        for order in layers:
            W_seen, b_seen = layers_seen[order]
            records.append(
                {
                    "d": cell.d,
                    "order": order,
                    "seed": cell.repetition,
                    "subspace_distance": last[order]["subspace_distance"],
                    "energy_outside": last[order]["energy_outside"],
                    "alignment": kernel_alignment(feature_kernel(W_seen, b_seen, X), agreement),
                    "accuracy": probe_accuracy(
                        W_seen,
                        b_seen,
                        measured,
                        n_new,
                        key.generator(Salt.PROBE, n_new),
                        n_test=grid.n_test,
                        new_tasks=grid.probe_tasks,
                    ),
                }
            )
        return records

    def claims(self, records, grid):
        claim = (
            "Taking the heads' step before the shared layer's concentrates the first layer in span(M): at the "
            f"same samples and steps (T = {grid.ablation_tasks}), heads first against a joint step"
        )
        threshold = f"energy outside span(M) of heads first at most {AT_MOST} times the joint step's, at every d"
        if not records:
            return [not_evaluated(claim, threshold, "no cell of the study finished")]
        energy = {
            d: (
                mean(records, "energy_outside", d=d, order=HEADS_FIRST),
                mean(records, "energy_outside", d=d, order=JOINT),
            )
            for d in grid.ablation_d
        }
        measured = "; ".join(
            f"d={d}: {ours:.3f} against {joint:.3f} ({ours / joint:.2f}x)" for d, (ours, joint) in energy.items()
        )
        holds = all(ours / joint <= AT_MOST for ours, joint in energy.values())
        return [{"claim": claim, "measured": measured, "threshold": threshold, "holds": holds}]

    def tables(self, records, grid):
        if not records:
            return []
        header = ["d", "order", *(LABELS[m] for m in MEASURES)]
        body = [
            [d, order, *(f"{mean(records, m, d=d, order=order):.3f}" for m in MEASURES)]
            for d in grid.ablation_d
            for order in ORDERS
        ]
        n_new = nearest(grid.n_new, 100)
        return [
            f"## The order of the updates (mean over seeds; T = {grid.ablation_tasks}, the probe at n_new = "
            f"{n_new}, d = {grid_values(grid.ablation_d)})\n\n{markdown_table(header, body)}"
        ]

    def figures(self, records, grid, plt, stage):
        if not records:
            return []
        fig, axes = plt.subplots(1, len(MEASURES), figsize=(4 * len(MEASURES), 3.6))
        width = 0.8 / len(grid.ablation_d)
        positions = np.arange(len(ORDERS))
        for axis, measure in zip(axes, MEASURES):
            for k, d in enumerate(grid.ablation_d):
                values = [mean(records, measure, d=d, order=order) for order in ORDERS]
                axis.bar(positions + k * width, values, width, label=f"d = {d}")
            axis.set_xticks(positions + width * (len(grid.ablation_d) - 1) / 2, list(ORDERS), rotation=20)
            axis.set_title(LABELS[measure], fontsize=10)
            axis.grid(alpha=0.3, axis="y")
        axes[0].legend(fontsize=8)
        fig.suptitle(f"The order of the updates at the same budget (T = {grid.ablation_tasks})")
        return [saved(fig, plt, stage, "ablation.png")]


ABLATION = Ablation()
