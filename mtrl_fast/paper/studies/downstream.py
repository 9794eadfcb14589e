"""Downstream: pretrain multi-task and single-task features at ``d``, then probe them, with random
and oracle features, on fresh tasks with ``n_new`` samples."""

import numpy as np

from .. import networks
from ..keys import Salt
from ..networks import family
from ..train import initial_layer, oracle_layer
from ._common import (
    PROBE_PARAMETERS,
    Cell,
    Parameter,
    ProbeStudy,
    log_axis,
    markdown_table,
    mean,
    nearest,
    not_evaluated,
    saved,
)

FEATURES = ("multi-task", "single-task", "random", "oracle")


class Downstream(ProbeStudy):
    name = "downstream"
    title = "probe accuracy on new tasks of multi-task, single-task, random and oracle features"
    fields = {"d": int, "n_new": int, "features": str, "seed": int, "accuracy": float}
    features = FEATURES
    parameters = PROBE_PARAMETERS + (
        Parameter(
            "downstream_d",
            "ints",
            (50, 100, 200, 400),
            "input dimensions of the downstream study",
            at_least_r=True,
            coordinate=True,
        ),
    )

    def cells(self, grid):
        return sorted(
            (Cell(self.name, d, s) for d in grid.downstream_d for s in range(grid.seeds)),
            key=lambda c: (c.d, c.repetition),
        )

    def settings(self, grid):
        return {**super().settings(grid), "networks": networks.SHARED}

    def run(self, cell, grid, shard_options):
        key = cell.random_key(grid)
        rng = key.generator(Salt.DOWNSTREAM_BASELINES, 0)
        tasks = family(grid, key, grid.downstream_tasks)
        config = grid.pretrain
        # The single-task network learns the first task, which is the first of every T (see ``family``).
        trained = {
            "multi-task": networks.trained(grid, config, key, grid.downstream_tasks, shard_options),
            "single-task": networks.trained(grid, config, key, 1, shard_options),
        }
        layers = {name: (result.W, result.b) for name, result in trained.items()}
        layers["random"] = (initial_layer(config.width, cell.d, rng, config.init_scale), None)
        layers["oracle"] = (oracle_layer(config.width, tasks.M, rng), None)
        return self.probe(cell, grid, config, tasks, layers, key)

    def claims(self, records, grid):
        if not grid.downstream_d:
            return [
                not_evaluated(
                    "Multi-task features beat random ones downstream", ">= +10 points", "no downstream d in the grid"
                )
            ]
        d_mid = nearest(grid.downstream_d, 200)
        n_mid = nearest(grid.n_new, 100)
        d_lo, d_hi = min(grid.downstream_d), max(grid.downstream_d)
        across_claim = (
            f"Multi-task features lose less accuracy than random ones as d grows ({d_lo} -> {d_hi}, n_new = {n_mid})"
        )
        if not records:
            beat = f"Multi-task features beat random ones downstream (d = {d_mid}, n_new = {n_mid})"
            return [
                not_evaluated(beat, ">= +10 points", "no cell of the study finished"),
                not_evaluated(across_claim, "multi-task change > random change", "no cell of the study finished"),
            ]
        rows = []
        multi = mean(records, "accuracy", d=d_mid, n_new=n_mid, features="multi-task")
        random = mean(records, "accuracy", d=d_mid, n_new=n_mid, features="random")
        rows.append(
            {
                "claim": f"Multi-task features beat random ones downstream (d = {d_mid}, n_new = {n_mid})",
                "measured": f"multi-task {multi:.3f}, random {random:.3f}: {100 * (multi - random):+.1f} points",
                "threshold": ">= +10 points",
                "holds": multi - random >= 0.10,
            }
        )
        if d_lo == d_hi:
            reason = f"needs two downstream d; got d = {d_lo}"
            return rows + [not_evaluated(across_claim, "multi-task change > random change", reason)]
        change = {
            name: mean(records, "accuracy", d=d_hi, n_new=n_mid, features=name)
            - mean(records, "accuracy", d=d_lo, n_new=n_mid, features=name)
            for name in ("multi-task", "random")
        }
        rows.append(
            {
                "claim": across_claim,
                "measured": f"accuracy change: multi-task {100 * change['multi-task']:+.1f} points, "
                f"random {100 * change['random']:+.1f}",
                "threshold": "multi-task change > random change",
                "holds": change["multi-task"] > change["random"],
            }
        )
        if d_hi >= 1000:  # at scale: multi-task features keep their accuracy, random ones lose theirs
            rows.append(
                {
                    "claim": f"Multi-task features keep their downstream accuracy as d grows to {d_hi} while random "
                    f"features lose theirs ({d_lo} -> {d_hi}, n_new = {n_mid})",
                    "measured": f"multi-task {100 * change['multi-task']:+.1f} points, random "
                    f"{100 * change['random']:+.1f}",
                    "threshold": "multi-task change >= -2 points (a probe's noise) and random change <= -5 points",
                    "holds": change["multi-task"] >= -0.02 and change["random"] <= -0.05,
                }
            )
        return rows

    def tables(self, records, grid):
        if not records:
            return []
        header = ["d", "features"] + [f"n_new={n}" for n in grid.n_new]
        body = [
            [d, name] + [f"{mean(records, 'accuracy', d=d, n_new=n, features=name):.3f}" for n in grid.n_new]
            for d in grid.downstream_d
            for name in FEATURES
        ]
        return [
            f"## Downstream probe accuracy (mean over seeds; multi-task features from T = {grid.downstream_tasks})"
            f"\n\n{markdown_table(header, body)}"
        ]

    def figures(self, records, grid, plt, stage):
        if not records:
            return []
        fig, axes = plt.subplots(
            1, len(grid.downstream_d), figsize=(3.2 * len(grid.downstream_d), 3.4), sharey=True, squeeze=False
        )
        for ax, d in zip(axes[0], grid.downstream_d):
            for name in FEATURES:
                per_n = [
                    [r["accuracy"] for r in records if r["d"] == d and r["n_new"] == n and r["features"] == name]
                    for n in grid.n_new
                ]
                ax.plot(grid.n_new, [np.mean(v) for v in per_n], marker="o", label=name)
                ax.fill_between(grid.n_new, [min(v) for v in per_n], [max(v) for v in per_n], alpha=0.15)
            log_axis(ax, grid.n_new)
            ax.set_title(f"d = {d}")
            ax.set_xlabel("n_new")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("probe accuracy on a new task")
        axes[0][-1].legend(fontsize=8)
        return [saved(fig, plt, stage, "downstream.png")]


DOWNSTREAM = Downstream()
