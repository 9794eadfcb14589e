"""What reusing a step's temporaries saves: the step with its scratch arrays kept per thread (the
library's behaviour) against the same step with every temporary allocated afresh, alternating in one
process (medians in ms, and fresh / kept).

    python benchmarks/scratch_effect.py [--rounds 15]

A fresh temporary of a few megabytes is mapped anew by the C library and each of its pages faults on
first touch; on a virtual machine a fault can cost a few microseconds. How often depends on the
allocator's state: glibc maps a block afresh when it is above its mmap threshold, which rises (up to
32 MiB) when the process frees a larger mapped block. In a process that freed larger arrays before
(the same script with ``bench.workload.step_inputs``, whose float64 draws are freed, read 0.98-1.02 at
the small shapes and 1.07-1.23 at (4096, 1024, 512, 256)), fresh temporaries below it come from the
heap; the kept ones never fault, whatever the state.
"""

import argparse

import numpy as np

import mtrl_fast
from mtrl_fast import _scratch, ops
from mtrl_fast._platform import blas_in_use, cpu_name
from mtrl_fast.bench.timing import alternating_medians

SHAPES = [
    ("shared", 1024, 256, 256, 64),
    ("shared", 2048, 512, 256, 128),
    ("shared", 4096, 1024, 512, 256),
    ("shared", 8192, 256, 256, 64),
    ("per-task", 256, 512, 256, 64),
    ("per-task", 512, 256, 128, 32),
]


def _fresh(slot, shape, dtype):
    return np.empty(shape, dtype=dtype)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    print(f"# {cpu_name()}, NumPy's BLAS {blas_in_use()}; logistic loss, float32; ms, medians")
    rng = np.random.default_rng(0)
    for layout, n, d, m, T in SHAPES:
        # Drawn in float32 directly, not by ``bench.workload.step_inputs``: its float64 temporaries, once
        # freed, raise glibc's mmap threshold, and fresh temporaries below it then come from the heap
        # without faulting (see the module's docstring).
        X = rng.standard_normal((n, d) if layout == "shared" else (T, n, d), dtype=np.float32)
        Y = np.where(rng.random((T, n)) < 0.5, np.float32(-1), np.float32(1))
        W = (rng.standard_normal((m, d)) / np.sqrt(d)).astype(np.float32)
        b = np.zeros(m, dtype=np.float32)
        A = (rng.standard_normal((T, m)) / np.sqrt(m)).astype(np.float32)

        def step(allocate, X=X, Y=Y, W=W, b=b, A=A):
            def run():
                ops.scratch = allocate
                return mtrl_fast.loss_and_grad(X, Y, W, b, A)

            return run

        try:
            medians = alternating_medians({"fresh": step(_fresh), "kept": step(_scratch.scratch)}, args.rounds)
        finally:
            ops.scratch = _scratch.scratch
        print(
            f"{layout} {(n, d, m, T)}: fresh {1e3 * medians['fresh']:.3f}, kept {1e3 * medians['kept']:.3f}, "
            f"fresh / kept {medians['fresh'] / medians['kept']:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
