"""Mechanism: how well the features align with cross-task label agreement (``paper.alignment``),
for multi-task features at each ``T``, single-task, random and oracle features."""

from .. import networks
from ..alignment import feature_kernel, kernel_alignment, kernel_spearman, label_agreement_kernel
from ..keys import Salt
from ..metrics import spearman
from ..networks import family
from ..train import initial_layer, oracle_layer
from ._common import Cell, Parameter, Study, grid_values, log_axis, markdown_table, mean, not_evaluated, saved, seen_by

BASELINES = ("single-task", "random", "oracle")
#: Fresh tasks of the ReLU teacher's Monte-Carlo label-agreement kernel.
AGREEMENT_TASKS = 1000
#: The claim: the alignment rises with T (Spearman over T at least this) ...
RISING = 0.9
#: ... and at the largest T exceeds the random and single-task features' by at least this.
MARGIN = 0.2


def held_out_agreement(grid, key, tasks):
    """``(X, K)``: the held-out points of ``key``'s ``(d, seed)`` and their label-agreement kernel, in
    the coordinates of ``tasks`` (those the cell measures in: ``seen_by``)."""
    X = key.generator(Salt.MECHANISM_POINTS).standard_normal((grid.mechanism_points, tasks.d))
    return X, label_agreement_kernel(tasks, X, AGREEMENT_TASKS, key.generator(Salt.AGREEMENT_TASKS))


class Mechanism(Study):
    name = "mechanism"
    title = "alignment of the features with cross-task label agreement, against T"
    fields = {"d": int, "T": int, "features": str, "seed": int, "alignment": float, "spearman": float}
    finite = frozenset({"alignment", "spearman"})
    parameters = (Parameter("mechanism_points", "int", 500, "held-out points of the mechanism study", minimum=3),)

    def cells(self, grid):
        trained = [Cell(self.name, d, s, T=T) for d in grid.d for T in grid.tasks for s in range(grid.seeds)]
        baselines = [Cell(self.name, d, s) for d in grid.d for s in range(grid.seeds)]
        return sorted(trained + baselines, key=lambda c: ((c.T or 1) * c.d, c.d, c.T or 0, c.repetition))

    def records_per_cell(self, cell, grid):
        return 1 if cell.T is not None else len(BASELINES)

    def settings(self, grid):
        return {**super().settings(grid), "agreement_tasks": AGREEMENT_TASKS, "networks": networks.SHARED}

    def tasks(self, cell, grid):
        return cell.T or 1

    def probe_layers(self, cell, grid):
        return 1 if cell.T is not None else len(BASELINES)

    def run(self, cell, grid, shard_options):
        config = grid.pretrain
        key = cell.random_key(grid)
        if cell.T is not None:
            tasks = family(grid, key, cell.T)
            trained = networks.trained(grid, config, key, cell.T, shard_options)
            layers = {"multi-task": (trained.W, trained.b)}
        else:
            rng = key.generator(Salt.MECHANISM_BASELINES, 0)
            tasks = family(grid, key, 1)
            single = networks.trained(grid, config, key, 1, shard_options)
            layers = {
                "single-task": (single.W, single.b),
                "random": (initial_layer(config.width, cell.d, rng, config.init_scale), None),
                "oracle": (oracle_layer(config.width, tasks.M, rng), None),
            }
        tasks, layers = seen_by(cell, grid, config, tasks, layers)
        X, agreement = held_out_agreement(grid, key, tasks)
        records = []
        for name, (W, b) in layers.items():
            features = feature_kernel(W, b, X)
            records.append(
                {
                    "d": cell.d,
                    "T": cell.T or 0,
                    "features": name,
                    "seed": cell.repetition,
                    "alignment": kernel_alignment(features, agreement),
                    "spearman": kernel_spearman(features, agreement),
                }
            )
        return records

    def _levels(self, records, grid, d):
        trained = [mean(records, "alignment", d=d, T=T, features="multi-task") for T in grid.tasks]
        baselines = {name: mean(records, "alignment", d=d, features=name) for name in BASELINES}
        return trained, baselines

    def claims(self, records, grid):
        claim = (
            "Multi-task pretraining aligns the features with cross-task label agreement (centred kernel "
            f"alignment on held-out points, T = {max(grid.tasks)})"
        )
        threshold = (
            f"Spearman over T >= {RISING} and a margin >= {MARGIN} over random and single-task features, for every d"
        )
        if len(grid.tasks) < 3:
            reason = f"needs three task counts; got {len(grid.tasks)} (T = {grid_values(grid.tasks)})"
            return [not_evaluated(claim, threshold, reason)]
        if not records:
            return [not_evaluated(claim, threshold, "no cell of the study finished")]
        measured, holds = [], True
        for d in grid.d:
            trained, baselines = self._levels(records, grid, d)
            rho = spearman(grid.tasks, trained)
            margin = trained[-1] - max(baselines["random"], baselines["single-task"])
            holds = holds and rho >= RISING and margin >= MARGIN
            measured.append(
                f"d={d}: Spearman {rho:.2f}; {trained[-1]:.2f} against random {baselines['random']:.2f}, "
                f"single-task {baselines['single-task']:.2f}"
            )
        return [{"claim": claim, "measured": "; ".join(measured), "threshold": threshold, "holds": holds}]

    def tables(self, records, grid):
        if not records:
            return []
        header = ["d", "random", "single-task"] + [f"T={T}" for T in grid.tasks] + ["oracle"]
        body = []
        for d in grid.d:
            trained, baselines = self._levels(records, grid, d)
            body.append(
                [d, f"{baselines['random']:.3f}", f"{baselines['single-task']:.3f}"]
                + [f"{value:.3f}" for value in trained]
                + [f"{baselines['oracle']:.3f}"]
            )
        return [
            "## Alignment of the features with cross-task label agreement (centred kernel alignment, mean over "
            f"seeds, {grid.mechanism_points} held-out points)\n\n{markdown_table(header, body)}"
        ]

    def figures(self, records, grid, plt, stage):
        if not records:
            return []
        fig, ax = plt.subplots(figsize=(6, 4))
        for d in grid.d:
            trained, baselines = self._levels(records, grid, d)
            (line,) = ax.plot(grid.tasks, trained, marker="o", label=f"multi-task, d = {d}")
            ax.axhline(baselines["random"], color=line.get_color(), linestyle=":", linewidth=1)
            ax.axhline(baselines["oracle"], color=line.get_color(), linestyle="--", linewidth=1)
        log_axis(ax, grid.tasks)
        ax.set_xlabel("number of tasks T")
        ax.set_ylabel("alignment with label agreement")
        ax.set_ylim(0, 1.02)
        ax.set_title("The mechanism (dotted: random features, dashed: oracle)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        return [saved(fig, plt, stage, "mechanism.png")]


MECHANISM = Mechanism()
