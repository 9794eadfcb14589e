"""Recovery: pretrain on ``T`` tasks at dimension ``d``; how well the first layer found ``span(M)``."""

import numpy as np

from .. import networks
from ..metrics import spearman
from ._common import Cell, Study, grid_values, log_axis, markdown_table, mean, not_evaluated, saved

#: The task count from which "many tasks" recover span(M) (the paper's T = 100 regime).
MANY_TASKS = 100
#: span(M) counts as recovered at a subspace distance of at most this (and the phase diagram's success).
RECOVERED = 0.3


class Recovery(Study):
    name = "recovery"
    title = "subspace distance and energy outside span(M) for each d and T"
    fields = {
        "d": int,
        "r": int,
        "T": int,
        "seed": int,
        "subspace_distance": float,
        "energy_outside": float,
        "final_loss": float,
    }
    finite = frozenset({"subspace_distance", "energy_outside"})

    def cells(self, grid):
        cells = [Cell(self.name, d, s, T=T) for d in grid.d for T in grid.tasks for s in range(grid.seeds)]
        return sorted(cells, key=lambda c: (c.T * c.d, c.d, c.T, c.repetition))

    def records_per_cell(self, cell, grid):
        return 1

    def tasks(self, cell, grid):
        return cell.T

    def run(self, cell, grid, shard_options):
        last = networks.trained(grid, grid.pretrain, cell.random_key(grid), cell.T, shard_options).history[-1]
        return [
            {
                "d": cell.d,
                "r": grid.r,
                "T": cell.T,
                "seed": cell.repetition,
                "subspace_distance": last["subspace_distance"],
                "energy_outside": last["energy_outside"],
                "final_loss": last["loss"],
            }
        ]

    def claims(self, records, grid):
        rows = [claim(records, grid) for claim in (_one_task, _many_tasks, _trend)]
        beyond = _beyond_100(records, grid)
        return rows + ([beyond] if beyond else [])

    def tables(self, records, grid):
        header = ["d \\ T"] + [str(T) for T in grid.tasks]
        return [
            f"## {title} (mean over seeds)\n\n"
            + markdown_table(
                header, [[d] + [f"{mean(records, field, d=d, T=T):.3f}" for T in grid.tasks] for d in grid.d]
            )
            for title, field in (
                ("Subspace distance", "subspace_distance"),
                ("Energy outside span(M)", "energy_outside"),
            )
        ]

    def figures(self, records, grid, plt, stage):
        names = []
        fig, ax = plt.subplots(figsize=(6, 4))
        for d in grid.d:
            per_T = [[r["subspace_distance"] for r in records if r["d"] == d and r["T"] == T] for T in grid.tasks]
            ax.plot(grid.tasks, [np.mean(v) for v in per_T], marker="o", label=f"d = {d}")
            ax.fill_between(grid.tasks, [min(v) for v in per_T], [max(v) for v in per_T], alpha=0.2)
        log_axis(ax, grid.tasks)
        ax.set_xlabel("number of tasks T")
        ax.set_ylabel("subspace distance (sin of largest angle)")
        ax.set_ylim(0, 1.05)
        ax.set_title(f"Recovery of span(M), r = {grid.r} (mean, band = seed range)")
        ax.grid(alpha=0.3)
        ax.legend()
        names.append(saved(fig, plt, stage, "recovery.png"))
        if max(grid.tasks) >= 1000:  # at scale: log-log, with the slope fitted from T = 100 on
            fig, ax = plt.subplots(figsize=(6, 4))
            for d in grid.d:
                means = [
                    np.mean([r["subspace_distance"] for r in records if r["d"] == d and r["T"] == T])
                    for T in grid.tasks
                ]
                past = [(T, v) for T, v in zip(grid.tasks, means) if T >= 100]
                slope = np.polyfit(*np.log(np.array(past)).T, 1)[0] if len(past) > 1 else float("nan")
                ax.loglog(grid.tasks, means, marker="o", label=f"d = {d} (slope from T = 100: {slope:.2f})")
            ax.set_xlabel("number of tasks T")
            ax.set_ylabel("subspace distance")
            ax.set_title("Recovery at scale (log-log)")
            ax.grid(alpha=0.3, which="both")
            ax.legend()
            names.append(saved(fig, plt, stage, "recovery-loglog.png"))
        return names


RECOVERY = Recovery()


def _one_task(records, grid):
    claim = f"One task cannot learn all r = {grid.r} directions (subspace distance at T = 1)"
    if 1 not in grid.tasks:
        return not_evaluated(claim, ">= 0.9 for every d", f"needs T = 1 in the grid; got T = {grid_values(grid.tasks)}")
    one_task = {d: mean(records, "subspace_distance", d=d, T=1) for d in grid.d}
    return {
        "claim": claim,
        "measured": ", ".join(f"d={d}: {v:.2f}" for d, v in one_task.items()),
        "threshold": ">= 0.9 for every d",
        "holds": all(v >= 0.9 for v in one_task.values()),
    }


def _many_tasks(records, grid):
    T_max = max(grid.tasks)
    threshold = f"distance <= {RECOVERED} and energy <= 0.1 for every d"
    if T_max < MANY_TASKS:
        return not_evaluated(
            f"Many tasks recover span(M) (T >= {MANY_TASKS}: subspace distance; energy outside)",
            threshold,
            f"needs a task count of at least {MANY_TASKS}; got T = {grid_values(grid.tasks)}",
        )
    many = {
        d: (mean(records, "subspace_distance", d=d, T=T_max), mean(records, "energy_outside", d=d, T=T_max))
        for d in grid.d
    }
    return {
        "claim": f"Many tasks recover span(M) (T = {T_max}: subspace distance; energy outside)",
        "measured": ", ".join(f"d={d}: {dist:.2f}; {energy:.3f}" for d, (dist, energy) in many.items()),
        "threshold": threshold,
        "holds": all(dist <= RECOVERED and energy <= 0.1 for dist, energy in many.values()),
    }


def _trend(records, grid):
    claim = "Subspace distance falls as T grows (Spearman correlation of T and mean distance)"
    if len(grid.tasks) < 3:
        return not_evaluated(
            claim,
            "<= -0.9 for every d",
            f"needs three task counts; got {len(grid.tasks)} (T = {grid_values(grid.tasks)})",
        )
    trends = {
        d: spearman(grid.tasks, [mean(records, "subspace_distance", d=d, T=T) for T in grid.tasks]) for d in grid.d
    }
    return {
        "claim": claim,
        "measured": ", ".join(f"d={d}: {rho:.2f}" for d, rho in trends.items()),
        "threshold": "<= -0.9 for every d",
        "holds": all(rho <= -0.9 for rho in trends.values()),
    }


def _beyond_100(records, grid):
    """At scale: the distance keeps falling past T = 100 (no floor), with the fitted log-log slope;
    ``None`` unless some d's records reach T = 1000 (every d of a full grid; not one whose large
    cells are missing)."""
    reaching = [d for d in grid.d if any(r["d"] == d and r["T"] >= 1000 for r in records)]
    if 100 not in grid.tasks or not reaching:
        return None
    beyond = {}
    for d in reaching:
        far = max(T for T in grid.tasks if any(r["d"] == d and r["T"] == T for r in records))
        past = [T for T in grid.tasks if T >= 100 and any(r["d"] == d and r["T"] == T for r in records)]
        distances = [mean(records, "subspace_distance", d=d, T=T) for T in past]
        slope = float(np.polyfit(np.log(past), np.log(distances), 1)[0]) if len(past) > 1 else float("nan")
        beyond[d] = (
            mean(records, "subspace_distance", d=d, T=100),
            far,
            mean(records, "subspace_distance", d=d, T=far),
            slope,
        )
    return {
        "claim": "The distance keeps falling beyond T = 100 (distance at the largest T; log-log slope from T = 100)",
        "measured": ", ".join(
            f"d={d}: {at100:.3f} -> {at_far:.4f} at T = {far}, slope {slope:.2f}"
            for d, (at100, far, at_far, slope) in beyond.items()
        ),
        "threshold": "at most half the distance at T = 100, for every d",
        "holds": all(at_far <= 0.5 * at100 for at100, _, at_far, _ in beyond.values()),
    }
