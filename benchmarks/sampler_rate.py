"""Float32 Gaussians per second, in one run: the compiled sampler (labels included) against NumPy's
``standard_normal`` (one thread) and ``torch.randn`` (all threads), in alternating rounds.

    python benchmarks/sampler_rate.py [--d 400] [--tasks 16] [--rounds 9]

Prints the CPU and the rates (median over rounds) with their ratios. Import order matters for the
thread pools (see the README's "Threads"): mtrl_fast first.
"""

import argparse
import sys

import numpy as np

import mtrl_fast  # noqa: F401  (first: sets the threading environment)
from mtrl_fast._info import config_info
from mtrl_fast.bench.timing import alternating_medians
from mtrl_fast.paper.tasks import make_task_family


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--d", type=int, default=400)
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    n = 5 * args.d
    family = make_task_family(args.d, 5, args.tasks, np.random.default_rng(0))
    out = (np.empty((args.tasks, n, args.d), np.float32), np.empty((args.tasks, n), np.float32))
    flat = out[0].reshape(-1)
    rng = np.random.default_rng(0)
    runs = {
        "ours (labels included)": lambda: family.sample_tasks(
            0, args.tasks, n, (1, 2, 0, 0), "per-task", np.float32, out=out
        ),
        "numpy standard_normal": lambda: rng.standard_normal(out=flat, dtype=np.float32),
    }
    try:
        import torch

        buffer = torch.empty(flat.size)
        runs["torch normal_"] = lambda: buffer.normal_()
        torch_threads = torch.get_num_threads()
    except ImportError:
        torch_threads = None
    for run in runs.values():
        run()
    medians = alternating_medians(runs, rounds=args.rounds, settle_s=0.2)
    info = config_info()
    print(
        f"{info['cpu']}, {info['cores']} cores; mtrl_fast {mtrl_fast.get_num_threads()} threads"
        + (f", torch {torch_threads} threads" if torch_threads else "")
        + f"; {flat.size / 1e6:.1f} M normals a run"
    )
    ours = medians["ours (labels included)"]
    for name, seconds in medians.items():
        print(f"  {name:<24} {flat.size / seconds / 1e6:8.0f} M/s   ours is {seconds / ours:5.2f}x as fast")
    return 0


if __name__ == "__main__":
    sys.exit(main())
