"""CI guard: the Numba step must not be slower than the NumPy reference step on a mid shape.

A same-process, same-run ratio of medians over alternating calls, never an absolute time; exits 1
when the ratio is above 1.
"""
import sys
import time

import numpy as np

import mtrl_fast
from mtrl_fast import reference
from mtrl_fast.bench import Point

POINTS = (Point("shared", 512, 128, 128, 32), Point("per-task", 128, 128, 128, 32))


def ratio(point, rounds=9):
    args = point.inputs()
    ours = lambda: mtrl_fast.loss_and_grad(*args)  # noqa: E731
    ref = lambda: reference.loss_and_grad(*args)  # noqa: E731
    ours()
    ref()
    times = {ours: [], ref: []}
    for _ in range(rounds):
        for function in (ours, ref):
            start = time.perf_counter()
            function()
            times[function].append(time.perf_counter() - start)
    return float(np.median(times[ours])), float(np.median(times[ref]))


def main():
    failed = False
    for point in POINTS:
        ours, ref = ratio(point)
        verdict = "ok" if ours <= ref else "SLOWER THAN THE REFERENCE"
        failed |= ours > ref
        print(f"{point.label}: numba {ours * 1e3:.2f} ms, reference {ref * 1e3:.2f} ms, "
              f"ratio {ours / ref:.3f}  {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
