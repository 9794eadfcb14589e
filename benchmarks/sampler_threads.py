"""Where the compiled sampler's second thread starts to pay: one draw of float32 inputs and labels on one
thread against all of them, in alternating rounds, at growing sizes (the kernel called directly, past the
work threshold that picks serial or parallel: ``NORMAL_COST`` in ``mtrl_fast/_kernels/_sampler.py``).

    python benchmarks/sampler_threads.py [--d 200] [--tasks 16] [--rounds 15] [--burst 1]

Prints the CPU and, per size, the medians per draw and one thread's time over all threads' (above 1: the
threads pay). ``--burst k`` times k draws in a row on one thread count, with the thread pool awake between
them; 1 switches the count at every draw.
"""

import argparse
from functools import partial

import numba
import numpy as np

import mtrl_fast  # noqa: F401  (first: sets the threading environment)
from mtrl_fast._kernels import draw_per_task
from mtrl_fast._platform import cpu_name
from mtrl_fast.bench.timing import alternating_medians
from mtrl_fast.paper import sampling
from mtrl_fast.paper.tasks import make_task_family


def _on_threads(count, function, burst):
    def run():
        previous = numba.get_num_threads()
        numba.set_num_threads(count)
        try:
            for _ in range(burst):
                function()
        finally:
            numba.set_num_threads(previous)

    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--d", type=int, default=200)
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--burst", type=int, default=1)
    args = parser.parse_args(argv)
    family = make_task_family(args.d, 5, args.tasks, np.random.default_rng(0))
    keys, _ = sampling.task_keys((1, 2, 3, 0), 0, args.tasks)
    M = np.zeros((4 * ((args.d + 3) // 4), family.r))  # M with zero rows up to whole Philox blocks
    M[: args.d] = family.M
    V, B = np.ascontiguousarray(family.V), np.zeros((0, family.r))
    threads = numba.get_num_threads()
    print(
        f"# {cpu_name()}; float32, d = {args.d}, {args.tasks} tasks; microseconds per draw, medians; "
        f"1 vs {threads} threads, bursts of {args.burst}"
    )
    for n in (2, 4, 8, 16, 32, 64, 128, 256):
        X = np.empty((args.tasks, n, args.d), np.float32)
        Y = np.empty((args.tasks, n), np.float32)
        draw = partial(draw_per_task.kernel, keys, 0, X, Y, M, V, B, 0.0)
        draw()
        runs = {"one": _on_threads(1, draw, args.burst), "all": _on_threads(threads, draw, args.burst)}
        medians = {name: seconds / args.burst for name, seconds in alternating_medians(runs, args.rounds).items()}
        print(
            f"normals {X.size:8d}  one thread {medians['one'] * 1e6:8.1f}  {threads} threads "
            f"{medians['all'] * 1e6:8.1f}  one / all {medians['one'] / medians['all']:.2f}"
        )


if __name__ == "__main__":
    main()
