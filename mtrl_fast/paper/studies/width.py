"""Width: downstream accuracy of multi-task and random features against the width ``m``, at several
``d``. The paper's claim that the neurons a good representation needs do not grow with ``d``."""

from dataclasses import replace

from ..keys import Salt
from ..networks import family
from ..train import initial_layer, pretrain
from ._common import (
    PROBE_PARAMETERS,
    Cell,
    Parameter,
    ProbeStudy,
    grid_values,
    log_axis,
    markdown_table,
    mean,
    nearest,
    not_evaluated,
    saved,
)

FEATURES = ("multi-task", "random")
#: The claim: at every width, multi-task features' accuracy at the largest ``d`` is within this of
#: the smallest ``d``'s (about a probe's noise over a few seeds).
SAME_CURVE = 0.03


class Width(ProbeStudy):
    name = "width"
    title = "downstream accuracy against the width m at several d"
    fields = {"d": int, "width": int, "n_new": int, "features": str, "seed": int, "accuracy": float}
    features = FEATURES
    parameters = PROBE_PARAMETERS + (
        Parameter(
            "widths", "ints", (8, 16, 32, 64, 128, 256), "widths m of the width study", at_least_r=True, coordinate=True
        ),
        Parameter(
            "width_d", "ints", (100, 10000), "input dimensions of the width study", at_least_r=True, coordinate=True
        ),
    )

    def cells(self, grid):
        cells = [Cell(self.name, d, s, width=m) for d in grid.width_d for m in grid.widths for s in range(grid.seeds)]
        return sorted(cells, key=lambda c: (c.d * c.width, c.d, c.width, c.repetition))

    def pretrain_config(self, cell, grid):
        return replace(grid.pretrain, width=cell.width)

    def coordinates(self, cell):
        return {"d": cell.d, "width": cell.width}

    def run(self, cell, grid, shard_options):
        key = cell.random_key(grid)
        rng = key.generator(Salt.WIDTH, cell.width)
        tasks = family(grid, key, grid.downstream_tasks)
        config = self.pretrain_config(cell, grid)
        trained = pretrain(tasks, config, rng, **shard_options)
        layers = {
            "multi-task": (trained.W, trained.b),
            "random": (initial_layer(cell.width, cell.d, rng, config.init_scale), None),
        }
        return self.probe(cell, grid, config, tasks, layers, key)

    def claims(self, records, grid):
        n_mid = nearest(grid.n_new, 100)
        d_lo, d_hi = min(grid.width_d), max(grid.width_d)
        claim = (
            "The neurons good features need do not grow with d: multi-task accuracy against the width is "
            f"the same curve at d = {d_lo} and {d_hi} (n_new = {n_mid})"
        )
        threshold = f"within {100 * SAME_CURVE:.0f} points at every width"
        if len(grid.width_d) < 2:
            return [not_evaluated(claim, threshold, f"needs two d; got --width-d {grid_values(grid.width_d)}")]
        if not records:
            return [not_evaluated(claim, threshold, "no cell of the study finished")]
        accuracy = {
            (d, m, name): mean(records, "accuracy", d=d, width=m, n_new=n_mid, features=name)
            for d in (d_lo, d_hi)
            for m in grid.widths
            for name in FEATURES
        }
        gaps = {m: accuracy[d_hi, m, "multi-task"] - accuracy[d_lo, m, "multi-task"] for m in grid.widths}
        widest = max(grid.widths)
        measured = (
            "accuracy change at m = "
            + ", ".join(f"{m}: {100 * gap:+.1f}" for m, gap in gaps.items())
            + f" points (random features at m = {widest}: {100 * accuracy[d_lo, widest, 'random']:.1f}% -> "
            f"{100 * accuracy[d_hi, widest, 'random']:.1f}%)"
        )
        return [
            {
                "claim": claim,
                "measured": measured,
                "threshold": threshold,
                "holds": all(abs(gap) <= SAME_CURVE for gap in gaps.values()),
            }
        ]

    def tables(self, records, grid):
        if not records:
            return []
        n_mid = nearest(grid.n_new, 100)
        header = ["d", "features"] + [f"m={m}" for m in grid.widths]
        body = [
            [d, name]
            + [f"{mean(records, 'accuracy', d=d, width=m, n_new=n_mid, features=name):.3f}" for m in grid.widths]
            for d in grid.width_d
            for name in FEATURES
        ]
        return [
            f"## Downstream accuracy against the width (mean over seeds; n_new = {n_mid}, multi-task features "
            f"from T = {grid.downstream_tasks})\n\n{markdown_table(header, body)}"
        ]

    def figures(self, records, grid, plt, stage):
        if not records:
            return []
        n_mid = nearest(grid.n_new, 100)
        fig, ax = plt.subplots(figsize=(6, 4))
        for d in grid.width_d:
            color = None  # one colour per d: solid multi-task, dashed random
            for name, style in zip(FEATURES, ("-", "--")):
                means = [mean(records, "accuracy", d=d, width=m, n_new=n_mid, features=name) for m in grid.widths]
                (line,) = ax.plot(grid.widths, means, style, color=color, marker="o", label=f"{name}, d = {d}")
                color = line.get_color()
        log_axis(ax, grid.widths)
        ax.set_xlabel("width m")
        ax.set_ylabel(f"probe accuracy on a new task (n_new = {n_mid})")
        ax.set_title("Neuron complexity against d")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        return [saved(fig, plt, stage, "width.png")]


WIDTH = Width()
