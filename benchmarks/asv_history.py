"""The history that ``asv run TAGS`` measured: a figure of a few benchmarks over the releases.

    asv run --quick TAGS                 # or without --quick: each point the median of asv's samples
    python benchmarks/asv_history.py [--results .asv/results] [--out docs/asv-history.png]

Reads asv's result files of this machine (the first under ``--results``, or ``--machine``), names each
commit by its tag (``git tag --points-at``; a commit without one by its short hash), and draws one
panel per benchmark: a line per parameter combination, the releases in order of their commit dates.
A version that lacks a benchmark (asv's skip) leaves a gap; an error would have no result either, so
the script also prints, for each release, how many points it measured and how many it skipped.
"""

import argparse
import json
import math
import subprocess
from pathlib import Path

#: The panels: ``(benchmark, label)``; a line per parameter combination.
PANELS = (
    ("bench_step.SweepD.time_loss_and_grad", "step, d = 64 / 1024 / 4096 (s)"),
    ("bench_step.Base.time_forward", "forward (s)"),
    ("bench_step.Reference.track_speedup_over_reference", "step: NumPy reference / ours (x)"),
    ("bench_first_call.FirstCall.track_first_call_seconds", "first call, empty cache (s)"),
    ("bench_step.SmallStep.time_checked_step", "small checked step (s)"),
    ("bench_sampling.Sampling.track_speedup_over_numpy", "sampler / NumPy's normals (x)"),
)


def _tag(commit):
    tags = subprocess.run(["git", "tag", "--points-at", commit], capture_output=True, text=True).stdout.split()
    return tags[0] if tags else commit[:8]


def load(results_dir, machine=None):
    """``[(release, date, {benchmark: (values, params)})]`` for every result file of the machine, by date."""
    folders = [p for p in sorted(Path(results_dir).iterdir()) if p.is_dir() and (machine is None or p.name == machine)]
    if not folders:
        raise SystemExit(f"no asv results under {results_dir} (run: asv run --quick TAGS)")
    newest = {}  # a release measured twice (by its tag, then by its commit's hash): its newest result file
    for path in folders[0].glob("*.json"):
        if path.name == "machine.json":
            continue
        data = json.loads(path.read_text())
        release = _tag(data["commit_hash"])
        if release not in newest or _started(newest[release]) < _started(data):
            newest[release] = data
    runs = []
    for release, data in newest.items():
        column = data["result_columns"].index("result")
        params = data["result_columns"].index("params")
        results = {name: (row[column], row[params]) for name, row in data["results"].items()}
        runs.append((release, data["date"], results))
    return sorted(runs, key=lambda run: run[1])


def _started(data):
    """When a result file's benchmarks ran (its latest start): ``date`` is the commit's."""
    column = data["result_columns"].index("started_at")
    return max((row[column] for row in data["results"].values() if len(row) > column and row[column]), default=0)


def _combinations(params):
    """Labels of a benchmark's parameter combinations, in asv's order (the product of its lists)."""
    labels = [""]
    for values in params:
        labels = [f"{head} {value.strip(chr(39))}".strip() for head in labels for value in values]
    return labels


def counts(runs):
    """``{release: (points measured, points skipped)}``."""
    found = {}
    for release, _, results in runs:
        values = [v for result, _ in results.values() for v in (result if isinstance(result, list) else [result])]
        measured = sum(1 for v in values if v is not None and not (isinstance(v, float) and math.isnan(v)))
        found[release] = (measured, len(values) - measured)
    return found


def plot(runs, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    releases = [release for release, _, _ in runs]
    figure, axes = plt.subplots(2, 3, figsize=(13, 7), constrained_layout=True)
    for axis, (name, label) in zip(axes.flat, PANELS):
        lines = {}
        for index, (_, _, results) in enumerate(runs):
            if name not in results or results[name][0] is None:
                continue
            values, params = results[name]
            values = values if isinstance(values, list) else [values]
            for combination, value in zip(_combinations(params) if params else [""], values):
                if value is not None and not (isinstance(value, float) and math.isnan(value)):
                    lines.setdefault(combination, {})[index] = value
        for combination, points in lines.items():
            xs = sorted(points)
            axis.plot(xs, [points[x] for x in xs], marker="o", label=combination or None)
        axis.set_xticks(range(len(releases)), releases)
        axis.set_title(label, fontsize=10)
        if name.split(".")[-1].startswith("time_") or "seconds" in name:
            axis.set_yscale("log")
        if any(lines):
            axis.legend(fontsize=7)
    figure.suptitle("asv run TAGS: today's suite over the releases (a gap: that version lacks the benchmark)")
    figure.savefig(out, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=".asv/results")
    parser.add_argument("--machine", default=None)
    parser.add_argument("--out", default="docs/asv-history.png")
    args = parser.parse_args()
    runs = load(args.results, args.machine)
    for release, (measured, skipped) in counts(runs).items():
        print(f"{release}: {measured} points measured, {skipped} skipped or missing")
    plot(runs, args.out)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
