"""One paper cell, the working tree against a git ref, in one run:

    python benchmarks/cell_against.py --base 725bd8d19f --threads 2      # against 0.2.0

A cell is ``pretrain`` on ``T`` tasks at dimension ``d`` with the paper's defaults (one round,
``n = 5 d``, width 256, a 1 GiB memory budget), sampling included, as ``mtrl-fast reproduce`` runs
it. The ref's package is exported as the perf gate does; one worker process imports it, another
the working tree's, each with ``--threads`` threads. After an untimed warm-up cell each, runs
alternate between them; the script prints each run and the ratio of the medians.
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
mtrl_fast.set_num_threads(threads)
family = make_task_family(d, 5, T, np.random.default_rng(0))

def cell(seed, family=family):
    start = time.perf_counter()
    trained = pretrain(family, PretrainConfig(), np.random.default_rng(seed), memory_budget=2**30)
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
    with tempfile.TemporaryDirectory() as folder:
        sides = {
            "base": Worker(export(commit, Path(folder)), WORKER, (args.d, args.T, args.threads)),
            "working tree": Worker(ROOT, WORKER, (args.d, args.T, args.threads)),
        }
        print(
            f"cell d = {args.d}, T = {args.T}, {args.threads} threads: working tree "
            f"{sides['working tree'].hello['version']} against {args.base} ({sides['base'].hello['version']})",
            flush=True,
        )
        times = {side: [] for side in sides}
        try:
            for round_index in range(args.repeat):
                order = list(sides) if round_index % 2 == 0 else list(sides)[::-1]
                for side in order:
                    seconds, distance = json.loads(sides[side].ask(round_index))
                    times[side].append(seconds)
                    print(
                        f"  {side:<12} run {round_index + 1}: {seconds:7.2f} s, subspace distance {distance:.4f}",
                        flush=True,
                    )
        finally:
            for side in sides.values():
                side.close()
    base, new = np.median(times["base"]), np.median(times["working tree"])
    print(f"median: base {base:.2f} s, working tree {new:.2f} s: the working tree is {base / new:.2f}x as fast")
    return 0


if __name__ == "__main__":
    sys.exit(main())
