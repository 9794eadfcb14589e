"""Turn a reproduction run's records into results.json, CSVs, figures and report.md.

Each of the paper's claims is checked against the measured numbers with a threshold stated in
the claim; the verdict is computed, never written by hand.
"""

import csv
import io
import json
from datetime import datetime, timezone

import numpy as np
from scipy.stats import spearmanr

from . import store

RECOVERY_FIELDS = tuple(store.RECORD_FIELDS["recovery"])
DOWNSTREAM_FIELDS = tuple(store.RECORD_FIELDS["downstream"])


def _mean(records, value, **where):
    picked = [r[value] for r in records if all(r[k] == v for k, v in where.items())]
    return float(np.mean(picked)) if picked else float("nan")


def _nearest(values, target):
    return min(values, key=lambda v: (abs(v - target), v))


def claims(results, grid):
    """The paper's claims, each with the measured numbers, the threshold and a verdict.

    Returns
    -------
    list of dict
        Keys ``claim``, ``measured`` (text), ``threshold`` (text) and ``holds`` (bool).
    """
    recovery, downstream = results["recovery"], results["downstream"]
    rows = []
    T_min, T_max = min(grid.tasks), max(grid.tasks)
    one_task = {d: _mean(recovery, "subspace_distance", d=d, T=T_min) for d in grid.d}
    rows.append(
        {
            "claim": f"One task cannot learn all r = {grid.r} directions (subspace distance at T = {T_min})",
            "measured": ", ".join(f"d={d}: {v:.2f}" for d, v in one_task.items()),
            "threshold": ">= 0.9 for every d",
            "holds": T_min == 1 and all(v >= 0.9 for v in one_task.values()),
        }
    )
    many = {
        d: (_mean(recovery, "subspace_distance", d=d, T=T_max), _mean(recovery, "energy_outside", d=d, T=T_max))
        for d in grid.d
    }
    rows.append(
        {
            "claim": f"Many tasks recover span(M) (T = {T_max}: subspace distance; energy outside)",
            "measured": ", ".join(f"d={d}: {dist:.2f}; {energy:.3f}" for d, (dist, energy) in many.items()),
            "threshold": "distance <= 0.3 and energy <= 0.1 for every d",
            "holds": T_max >= 100 and all(dist <= 0.3 and energy <= 0.1 for dist, energy in many.values()),
        }
    )
    trends = {}
    for d in grid.d:
        means = [_mean(recovery, "subspace_distance", d=d, T=T) for T in grid.tasks]
        trends[d] = float(spearmanr(grid.tasks, means)[0]) if len(grid.tasks) > 2 else float("nan")
    rows.append(
        {
            "claim": "Subspace distance falls as T grows (Spearman correlation of T and mean distance)",
            "measured": ", ".join(f"d={d}: {rho:.2f}" for d, rho in trends.items()),
            "threshold": "<= -0.9 for every d",
            "holds": all(rho <= -0.9 for rho in trends.values()),
        }
    )
    # The d whose records reach T = 1000 (every d of a full grid; not one whose large cells are missing).
    reaching = [d for d in grid.d if any(r["d"] == d and r["T"] >= 1000 for r in recovery)]
    if 100 in grid.tasks and reaching:
        # At scale: the distance keeps falling past T = 100 (no floor), with the fitted log-log slope.
        beyond = {}
        for d in reaching:
            far = max(T for T in grid.tasks if any(r["d"] == d and r["T"] == T for r in recovery))
            past = [T for T in grid.tasks if T >= 100 and any(r["d"] == d and r["T"] == T for r in recovery)]
            distances = [_mean(recovery, "subspace_distance", d=d, T=T) for T in past]
            slope = float(np.polyfit(np.log(past), np.log(distances), 1)[0]) if len(past) > 1 else float("nan")
            beyond[d] = (
                _mean(recovery, "subspace_distance", d=d, T=100),
                far,
                _mean(recovery, "subspace_distance", d=d, T=far),
                slope,
            )
        rows.append(
            {
                "claim": "The distance keeps falling beyond T = 100 (distance at the largest T; log-log slope from "
                "T = 100)",
                "measured": ", ".join(
                    f"d={d}: {at100:.3f} -> {at_far:.4f} at T = {far}, slope {slope:.2f}"
                    for d, (at100, far, at_far, slope) in beyond.items()
                ),
                "threshold": "at most half the distance at T = 100, for every d",
                "holds": all(at_far <= 0.5 * at100 for at100, _, at_far, _ in beyond.values()),
            }
        )
    if downstream:
        d_mid = _nearest(grid.downstream_d, 200)
        n_mid = _nearest(grid.n_new, 100)
        multi = _mean(downstream, "accuracy", d=d_mid, n_new=n_mid, features="multi-task")
        random = _mean(downstream, "accuracy", d=d_mid, n_new=n_mid, features="random")
        rows.append(
            {
                "claim": f"Multi-task features beat random ones downstream (d = {d_mid}, n_new = {n_mid})",
                "measured": f"multi-task {multi:.3f}, random {random:.3f}: {100 * (multi - random):+.1f} points",
                "threshold": ">= +10 points",
                "holds": multi - random >= 0.10,
            }
        )
        d_lo, d_hi = min(grid.downstream_d), max(grid.downstream_d)
        change = {
            name: _mean(downstream, "accuracy", d=d_hi, n_new=n_mid, features=name)
            - _mean(downstream, "accuracy", d=d_lo, n_new=n_mid, features=name)
            for name in ("multi-task", "random")
        }
        rows.append(
            {
                "claim": f"Multi-task features lose less accuracy than random ones as d grows "
                f"({d_lo} -> {d_hi}, n_new = {n_mid})",
                "measured": f"accuracy change: multi-task {100 * change['multi-task']:+.1f} points, "
                f"random {100 * change['random']:+.1f}",
                "threshold": "multi-task change > random change",
                "holds": d_lo < d_hi and change["multi-task"] > change["random"],
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


def _csv(records, fields):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def _log_axis(ax, values):
    """Log-scaled x axis with a tick at each grid value, labelled plainly."""
    ax.set_xscale("log")
    ax.set_xticks(list(values))
    ax.set_xticklabels([str(v) for v in values])
    ax.minorticks_off()


def _figures(results, grid, stage):
    """Write the PNG figures to ``stage(name)``; returns their names, or a sentence on why there are none."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "figures skipped: matplotlib is not installed (pip install 'mtrl_fast[paper]')"
    recovery, downstream = results["recovery"], results["downstream"]
    names = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for d in grid.d:
        per_T = [[r["subspace_distance"] for r in recovery if r["d"] == d and r["T"] == T] for T in grid.tasks]
        means = [np.mean(v) for v in per_T]
        ax.plot(grid.tasks, means, marker="o", label=f"d = {d}")
        ax.fill_between(grid.tasks, [min(v) for v in per_T], [max(v) for v in per_T], alpha=0.2)
    _log_axis(ax, grid.tasks)
    ax.set_xlabel("number of tasks T")
    ax.set_ylabel("subspace distance (sin of largest angle)")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Recovery of span(M), r = {grid.r} (mean, band = seed range)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(stage("recovery.png"), dpi=120, format="png")
    plt.close(fig)
    names.append("recovery.png")

    if max(grid.tasks) >= 1000:  # at scale: log-log, with the slope fitted from T = 100 on
        fig, ax = plt.subplots(figsize=(6, 4))
        for d in grid.d:
            means = [
                np.mean([r["subspace_distance"] for r in recovery if r["d"] == d and r["T"] == T]) for T in grid.tasks
            ]
            past = [(T, v) for T, v in zip(grid.tasks, means) if T >= 100]
            slope = np.polyfit(*np.log(np.array(past)).T, 1)[0] if len(past) > 1 else float("nan")
            ax.loglog(grid.tasks, means, marker="o", label=f"d = {d} (slope from T = 100: {slope:.2f})")
        ax.set_xlabel("number of tasks T")
        ax.set_ylabel("subspace distance")
        ax.set_title("Recovery at scale (log-log)")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
        fig.tight_layout()
        fig.savefig(stage("recovery-loglog.png"), dpi=120, format="png")
        plt.close(fig)
        names.append("recovery-loglog.png")

    if downstream:
        fig, axes = plt.subplots(
            1, len(grid.downstream_d), figsize=(3.2 * len(grid.downstream_d), 3.4), sharey=True, squeeze=False
        )
        for ax, d in zip(axes[0], grid.downstream_d):
            for name in ("multi-task", "single-task", "random", "oracle"):
                per_n = [
                    [r["accuracy"] for r in downstream if r["d"] == d and r["n_new"] == n and r["features"] == name]
                    for n in grid.n_new
                ]
                ax.plot(grid.n_new, [np.mean(v) for v in per_n], marker="o", label=name)
                ax.fill_between(grid.n_new, [min(v) for v in per_n], [max(v) for v in per_n], alpha=0.15)
            _log_axis(ax, grid.n_new)
            ax.set_title(f"d = {d}")
            ax.set_xlabel("n_new")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("probe accuracy on a new task")
        axes[0][-1].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(stage("downstream.png"), dpi=120, format="png")
        plt.close(fig)
        names.append("downstream.png")
    return names


def _markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def claims_table(rows):
    """The claims as a Markdown table."""
    return _markdown_table(
        ["claim", "measured", "threshold", "verdict"],
        [[r["claim"], r["measured"], r["threshold"], "holds" if r["holds"] else "FAILS"] for r in rows],
    )


def _report(results, grid, rows, figures, profile=None):
    recovery, downstream = results["recovery"], results["downstream"]
    cfg = grid.pretrain
    parts = [
        "# Reproduction report",
        "",
        f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `mtrl-fast reproduce`. "
        f"r = {grid.r}, {grid.seeds} seed(s), labels `{grid.label_kind}` with flip noise {grid.noise}; "
        f"pretraining: width {cfg.width}, {cfg.rounds} round(s) of {cfg.head_steps} head step(s) "
        f"(lr {cfg.head_lr}) then one first-layer step (lr {cfg.lr}, weight decay {cfg.weight_decay}), "
        f"`{cfg.loss}` loss, {cfg.layout} samples, n1 = n2 = "
        f"{cfg.samples_per_task if cfg.samples_per_task else '5 d'} per task.",
        "",
        "## The paper's claims",
        "",
        claims_table(rows),
        "",
        "## Subspace distance (mean over seeds)",
        "",
        _markdown_table(
            ["d \\ T"] + [str(T) for T in grid.tasks],
            [[d] + [f"{_mean(recovery, 'subspace_distance', d=d, T=T):.3f}" for T in grid.tasks] for d in grid.d],
        ),
        "",
        "## Energy outside span(M) (mean over seeds)",
        "",
        _markdown_table(
            ["d \\ T"] + [str(T) for T in grid.tasks],
            [[d] + [f"{_mean(recovery, 'energy_outside', d=d, T=T):.3f}" for T in grid.tasks] for d in grid.d],
        ),
    ]
    if downstream:
        parts += [
            "",
            f"## Downstream probe accuracy (mean over seeds; multi-task features from T = {grid.downstream_tasks})",
            "",
        ]
        header = ["d", "features"] + [f"n_new={n}" for n in grid.n_new]
        body = [
            [d, name] + [f"{_mean(downstream, 'accuracy', d=d, n_new=n, features=name):.3f}" for n in grid.n_new]
            for d in grid.downstream_d
            for name in ("multi-task", "single-task", "random", "oracle")
        ]
        parts.append(_markdown_table(header, body))
    parts += ["", "## Figures", ""]
    if isinstance(figures, str):
        parts.append(figures)
    else:
        parts += [f"![{name}]({name})" for name in figures]
    if profile is not None and profile["cells"]:
        parts += [
            "",
            f"## Where the time went ({profile['cells']} cells, summed)",
            "",
            "Sampling draws the inputs and their labels (one compiled pass); the kernels are the head and "
            "first-layer steps; the metrics, the subspace distance and energy; the probe, the downstream "
            "study's ridge probes.",
            "",
            profile_table(profile),
        ]
    return "\n".join(parts) + "\n"


def profile_table(timing):
    """A Markdown table of where the cells' time went (``experiments.profile``)."""
    total = timing["seconds"] or 1.0
    rows = [[name, f"{seconds:.1f}", f"{100 * seconds / total:.0f}%"] for name, seconds in timing["parts"].items()]
    rows.append(["all", f"{timing['seconds']:.1f}", "100%"])
    return _markdown_table(["part", "seconds", "share"], rows)


def write_outputs(results, grid, out, profile=None):
    """Write results.json, recovery.csv, downstream.csv, the figures and report.md into ``out``.

    All or nothing: the files are written as a new set and published together only when every
    one was written (``store.output_set``), so a failure (a full disk, a stop) leaves the
    previous set whole, and a reader never sees files of two runs side by side.

    ``profile`` (``experiments.profile``) adds where the cells' time went.

    Returns
    -------
    list of dict
        The claims (see :func:`claims`).
    """
    rows = claims(results, grid)
    document = {
        "config": grid.to_dict(),
        "recovery": results["recovery"],
        "downstream": results["downstream"],
        "claims": rows,
    }
    if profile is not None:
        document["profile"] = profile
    with store.output_set(out) as stage:
        stage("results.json").write_text(json.dumps(document, indent=1), encoding="utf-8")
        stage("recovery.csv").write_text(_csv(results["recovery"], RECOVERY_FIELDS), encoding="utf-8")
        stage("downstream.csv").write_text(_csv(results["downstream"], DOWNSTREAM_FIELDS), encoding="utf-8")
        figures = _figures(results, grid, stage)
        stage("report.md").write_text(_report(results, grid, rows, figures, profile), encoding="utf-8")
    return rows
