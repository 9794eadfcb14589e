"""One paper cell, the working tree against a git ref, in one run:

    python benchmarks/cell_against.py --base 725bd8d19f --threads 2      # against 0.2.0

A cell is ``pretrain`` on ``T`` tasks at dimension ``d`` with the paper's defaults (one round,
``n = 5 d``, width 256, a 1 GiB memory budget), sampling included, as ``mtrl-fast reproduce`` runs
it. The ref's package is exported as the perf gate does; one worker process imports it, others
the working tree's, each with ``--threads`` threads. After an untimed warm-up cell each, runs
alternate between them; the script prints each run and the ratios of the medians.

Like for like: both sides draw every input in all ``d`` coordinates (the full sampler; a release
before the reduced sampler knows no other). The working tree also runs a second, labelled row on
the exact reduced sampler, which draws ``r + width`` coordinates a sample where that is fewer.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from perf_gate import ROOT, Worker, export, resolve

WORKER = r"""
import json, sys, time
import mtrl_fast
import numpy as np
from mtrl_fast.paper.tasks import make_task_family
from mtrl_fast.paper.metrics import subspace_distance
from mtrl_fast.paper.train import PretrainConfig, pretrain

d, T, threads = (int(v) for v in sys.argv[1:4])
sampler = sys.argv[4]
mtrl_fast.set_num_threads(threads)
family = make_task_family(d, 5, T, np.random.default_rng(0))
try:
    config = PretrainConfig(sampler=sampler)
except TypeError:  # a release before the reduced sampler: it draws every coordinate
    assert sampler == "full", "this release has no reduced sampler"
    config = PretrainConfig()

def cell(seed, family=family):
    start = time.perf_counter()
    trained = pretrain(family, config, np.random.default_rng(seed), memory_budget=2**30)
    return time.perf_counter() - start, subspace_distance(trained.W, family.M)

cell(99, make_task_family(d, 5, min(T, 32), np.random.default_rng(1)))  # compile, load the cache
print(json.dumps({"package": mtrl_fast.__file__, "version": mtrl_fast.__version__}), flush=True)
for line in sys.stdin:
    print(json.dumps(cell(int(line))), flush=True)
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="git ref to compare with")
    parser.add_argument("--d", type=int, default=400)
    parser.add_argument("--T", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    commit = resolve(args.base)
    reduced = 5 + 256 < args.d  # the reduced sampler's basis, r + width coordinates, is smaller than d
    with tempfile.TemporaryDirectory() as folder:
        base_tree = export(commit, Path(folder))
        rows = [("base full", base_tree, "full"), ("tree full", ROOT, "full")]
        rows += [("tree reduced", ROOT, "reduced")] if reduced else []
        sides = {label: Worker(tree, WORKER, (args.d, args.T, args.threads, sampler)) for label, tree, sampler in rows}
        print(
            f"cell d = {args.d}, T = {args.T}, {args.threads} threads: working tree "
            f"{sides['tree full'].hello['version']} against {args.base} ({sides['base full'].hello['version']}); "
            f"coordinates drawn per sample: full {args.d}" + (f", reduced {min(args.d, 5 + 256)}" if reduced else ""),
            flush=True,
        )
        times = {side: [] for side in sides}
        try:
            for round_index in range(args.repeat):
                shift = round_index % len(sides)
                for side in list(sides)[shift:] + list(sides)[:shift]:
                    seconds, distance = json.loads(sides[side].ask(round_index))
                    times[side].append(seconds)
                    print(
                        f"  {side:<12} run {round_index + 1}: {seconds:7.2f} s, subspace distance {distance:.4f}",
                        flush=True,
                    )
        finally:
            for side in sides.values():
                side.close()
    medians = {side: float(np.median(seconds)) for side, seconds in times.items()}
    base = medians["base full"]
    print(
        "median: "
        + ", ".join(f"{side} {seconds:.2f} s ({base / seconds:.2f}x the base)" for side, seconds in medians.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
