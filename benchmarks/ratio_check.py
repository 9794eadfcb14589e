"""CI guard: the Numba step must not be slower than the NumPy reference step on a mid shape.

A same-process, same-run ratio of medians over alternating bursts, never an absolute time; exits 1
when the ratio is above 1.
"""
import sys

import mtrl_fast
from mtrl_fast import reference
from mtrl_fast.bench.timing import alternating_medians
from mtrl_fast.bench.workload import RATIO_CHECK_POINTS


def main():
    failed = False
    for point in RATIO_CHECK_POINTS:
        args = point.inputs()
        medians = alternating_medians({"ours": lambda: mtrl_fast.loss_and_grad(*args),
                                       "reference": lambda: reference.loss_and_grad(*args)}, rounds=9)
        ours, ref = medians["ours"], medians["reference"]
        verdict = "ok" if ours <= ref else "SLOWER THAN THE REFERENCE"
        failed |= ours > ref
        print(f"{point.label}: numba {ours * 1e3:.2f} ms, reference {ref * 1e3:.2f} ms, "
              f"ratio {ours / ref:.3f}  {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
