"""Phase diagram: where recovery succeeds, over the task count ``T`` and the samples per task ``n``,
at two ``d`` and two subspace dimensions ``r``. The theory's sample complexity is about this picture:
how many tasks, and how many samples of each, recover ``span(M)``, and how that moves with ``d``.
The samples per task are given in percent of ``d`` (500: ``n = 5 d``, the other studies' default), so
that the same diagram at another ``d`` asks whether the boundary moves when ``n`` grows with ``d``.

Each cell is one ``(d, seed)``; it trains, for every ``r`` and every ``(T, n)`` of the grid, a network
from the same first layer (a paired design: the grid's points differ only in their tasks and samples)
and records its subspace distance. Recovery *succeeds* where the mean distance over seeds is at most
:data:`SUCCESS`. The *boundary* at each ``n`` is the smallest ``T`` that succeeds; its log-log slope
against ``n`` says how tasks trade for samples.
"""

from dataclasses import replace

import numpy as np

from ..keys import Salt
from ..metrics import subspace_distance
from ..tasks import make_task_family
from ..train import pretrain
from ._common import Cell, Parameter, Study, grid_values, markdown_table, mean, not_evaluated
from .recovery import RECOVERED

#: Recovery succeeds where the mean subspace distance is at most this (the recovery study's threshold).
SUCCESS = RECOVERED


class Phase(Study):
    name = "phase"
    title = "where recovery succeeds: task count T against samples per task n, at two d and two r"
    fields = {"d": int, "r": int, "T": int, "n": int, "seed": int, "subspace_distance": float}
    finite = frozenset({"subspace_distance"})
    parameters = (
        Parameter("phase_d", "ints", (100, 1000), "input dimensions of the phase diagram", coordinate=True),
        Parameter("phase_r", "ints", (2, 5), "subspace dimensions r of the phase diagram"),
        Parameter("phase_tasks", "ints", (1, 2, 5, 10, 20, 50, 100), "task counts T of the phase diagram"),
        Parameter(
            "phase_samples", "ints", (20, 50, 100, 200, 500), "samples per task of the phase diagram, in percent of d"
        ),
    )

    def problem(self, grid):
        largest = max(grid.phase_r)
        if largest > min(*grid.phase_d, grid.pretrain.width):
            return f"every phase_r must be at most each phase_d and the width; got r = {largest}"
        return None

    def cells(self, grid):
        return sorted(
            (Cell(self.name, d, s) for d in grid.phase_d for s in range(grid.seeds)), key=lambda c: (c.d, c.repetition)
        )

    def records_per_cell(self, cell, grid):
        return len(grid.phase_r) * len(grid.phase_tasks) * len(grid.phase_samples)

    def tasks(self, cell, grid):
        return max(grid.phase_tasks)

    def run(self, cell, grid, shard_options):
        key = cell.random_key(grid)
        records = []
        for r in grid.phase_r:
            for T in grid.phase_tasks:
                # The same subspace for every T, and the first T tasks the same (drawn row by row after M).
                truth = key.generator(Salt.PHASE_TRUTH, r)
                tasks = make_task_family(cell.d, r, T, truth, kind=grid.label_kind, noise=grid.noise)
                for n in grid.phase_samples:
                    config = replace(grid.pretrain, samples_per_task=max(1, n * cell.d // 100))
                    trained = pretrain(tasks, config, key.generator(Salt.PHASE, r), **shard_options)
                    records.append(
                        {
                            "d": cell.d,
                            "r": r,
                            "T": T,
                            "n": n,
                            "seed": cell.repetition,
                            "subspace_distance": subspace_distance(trained.W, tasks.M),
                        }
                    )
        return records

    def boundary(self, records, grid, d, r):
        """``{n: the smallest T whose mean distance is at most SUCCESS, or None}``, ``n`` in percent of ``d``."""
        found = {}
        for n in grid.phase_samples:
            good = [T for T in grid.phase_tasks if mean(records, "subspace_distance", d=d, r=r, T=T, n=n) <= SUCCESS]
            found[n] = min(good) if good else None
        return found

    @staticmethod
    def slope(boundary):
        """Log-log slope of the boundary's ``T`` against ``n`` (NaN with fewer than two points that
        succeed at more than one task count)."""
        points = [(n, T) for n, T in boundary.items() if T is not None]
        if len(points) < 2 or len({T for _, T in points}) < 2:
            return float("nan")
        n, T = np.log(np.array(points, dtype=float)).T
        return float(np.polyfit(n, T, 1)[0])

    def claims(self, records, grid):
        d_lo, d_hi = min(grid.phase_d), max(grid.phase_d)
        claim = (
            f"Where recovery succeeds does not move with d: the smallest T that recovers span(M) (mean distance <= "
            f"{SUCCESS}) at each n / d is the same at d = {d_lo} and {d_hi}, up to one step of the T grid"
        )
        threshold = "for every r and n"
        if len(grid.phase_d) < 2:
            return [not_evaluated(claim, threshold, f"needs two d; got --phase-d {grid_values(grid.phase_d)}")]
        if not records:
            return [not_evaluated(claim, threshold, "no cell of the study finished")]
        steps, measured = [], []
        for r in grid.phase_r:
            lo, hi = self.boundary(records, grid, d_lo, r), self.boundary(records, grid, d_hi, r)
            for n in grid.phase_samples:
                a, b = lo[n], hi[n]
                index = {T: i for i, T in enumerate(grid.phase_tasks)}
                if a is None and b is None:
                    continue
                steps.append(len(grid.phase_tasks) if a is None or b is None else abs(index[a] - index[b]))
            measured.append(
                f"r={r}: T at n = {grid_values(grid.phase_samples)}% of d: "
                + ", ".join("-" if v is None else str(v) for v in lo.values())
                + f" (d={d_lo}) against "
                + ", ".join("-" if v is None else str(v) for v in hi.values())
                + f" (d={d_hi}); slope {self.slope(lo):.2f} and {self.slope(hi):.2f}"
            )
        holds = bool(steps) and max(steps) <= 1
        return [{"claim": claim, "measured": "; ".join(measured), "threshold": threshold, "holds": holds}]

    def tables(self, records, grid):
        if not records:
            return []
        sections = []
        for d in grid.phase_d:
            for r in grid.phase_r:
                header = ["n (% of d) \\ T", *(str(T) for T in grid.phase_tasks)]
                body = [
                    [n, *(f"{mean(records, 'subspace_distance', d=d, r=r, T=T, n=n):.2f}" for T in grid.phase_tasks)]
                    for n in grid.phase_samples
                ]
                sections.append(
                    f"## Phase diagram, d = {d}, r = {r}: mean subspace distance (success at most {SUCCESS})\n\n"
                    + markdown_table(header, body)
                )
        return sections

    def figures(self, records, grid, plt, stage):
        if not records:
            return []
        rows, columns = len(grid.phase_r), len(grid.phase_d)
        fig, axes = plt.subplots(
            rows, columns, figsize=(4.5 * columns + 1, 3.6 * rows), squeeze=False, constrained_layout=True
        )
        for i, r in enumerate(grid.phase_r):
            for j, d in enumerate(grid.phase_d):
                axis = axes[i][j]
                values = np.array(
                    [
                        [mean(records, "subspace_distance", d=d, r=r, T=T, n=n) for T in grid.phase_tasks]
                        for n in grid.phase_samples
                    ]
                )
                image = axis.imshow(values, origin="lower", cmap="viridis_r", vmin=0, vmax=1, aspect="auto")
                boundary = self.boundary(records, grid, d, r)
                index = {T: k for k, T in enumerate(grid.phase_tasks)}
                xs = [index[T] for T in boundary.values() if T is not None]
                ys = [k for k, T in enumerate(boundary.values()) if T is not None]
                axis.plot(xs, ys, "w-o", markersize=4)
                axis.set_xticks(range(len(grid.phase_tasks)), [str(T) for T in grid.phase_tasks])
                axis.set_yticks(range(len(grid.phase_samples)), [str(n) for n in grid.phase_samples])
                axis.set_xlabel("tasks T")
                axis.set_ylabel("samples per task n, % of d")
                axis.set_title(f"d = {d}, r = {r}", fontsize=10)
        fig.colorbar(image, ax=axes, shrink=0.8, label="subspace distance")
        fig.suptitle(f"Where recovery succeeds (white: the smallest T with distance <= {SUCCESS})")
        fig.savefig(stage("phase.png"), dpi=120, format="png")
        plt.close(fig)
        return ["phase.png"]


PHASE = Phase()
