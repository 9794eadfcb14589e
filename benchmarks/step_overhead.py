"""What a small step pays beyond its own work: ``loss_and_grad`` against its floor, the same BLAS
products and compiled passes called directly on preallocated arrays (no checks, no Python between
them), alternating in one process. The share ``(step - floor) / step`` is the step's checks and
glue; the share without checks (``check_finite=False``) is given beside it.

    python benchmarks/step_overhead.py [--rounds 40]

Shared layout only (the per-task step runs one pass per block): ``T`` above
``ops.FUSED_TASK_SUM_MAX_T``, the logistic loss, NumPy's BLAS.
"""

import argparse

import numpy as np

import mtrl_fast
from mtrl_fast import _kernels as kernels
from mtrl_fast import ops
from mtrl_fast._platform import blas_in_use, cpu_name
from mtrl_fast.bench.timing import alternating_samples
from mtrl_fast.bench.workload import step_inputs
from mtrl_fast.losses import SHARED, loss_id

SHAPES = [(256, 64, 64, 8), (512, 96, 128, 24), (512, 128, 128, 16), (1024, 256, 256, 64)]


def _direct(kernel_pass, *args):
    """The pass's compiled twin that the step would pick, without the pass's Python wrapper."""
    twin = kernel_pass.kernel if kernel_pass.parallel(*args) else kernel_pass.serial_kernel
    twin(*args)  # compiled (or loaded) before the timing
    return twin._dispatcher


def floor(X, Y, W, b, A):
    """The step's products and passes alone, on arrays allocated once."""
    n, m, T = X.shape[0], W.shape[0], A.shape[0]
    assert T > ops.FUSED_TASK_SUM_MAX_T
    H, R, D = (np.empty(shape, dtype=X.dtype) for shape in ((n, m), (T, n), (n, m)))
    gA, gb, gW = np.empty_like(A), np.empty_like(b), np.empty_like(W)
    code, scale, chunks = loss_id("logistic"), 1.0 / (T * n), kernels.chunk_count(n)
    bias_relu = _direct(kernels.bias_relu, H, b)
    loss_slopes = _direct(kernels.loss_slopes, R, Y, code, scale)
    mask = _direct(kernels.relu_mask_colsum, D, H, gb, chunks)
    W_T = W.T

    def step():
        np.matmul(X, W_T, out=H)
        bias_relu(H, b)
        np.matmul(A, H.T, out=R)
        loss_slopes(R, Y, code, scale)
        np.matmul(R, H, out=gA)
        np.matmul(R.T, A, out=D)
        mask(D, H, gb, chunks)
        np.matmul(D.T, X, out=gW)

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    print(
        f"{cpu_name()}, {blas_in_use()}, {mtrl_fast.get_num_threads()} threads, float32, median of {args.rounds} rounds"
    )
    print(f"{'(n, d, m, T)':>22} {'step':>9} {'no checks':>10} {'floor':>9} {'glue+checks':>12} {'glue':>6}")
    with mtrl_fast.gemm("numpy"):
        for n, d, m, T in SHAPES:
            inputs = step_inputs(SHARED, n, d, m, T)
            times = alternating_samples(
                {
                    "step": lambda inputs=inputs: mtrl_fast.loss_and_grad(*inputs),
                    "no checks": lambda inputs=inputs: mtrl_fast.loss_and_grad(*inputs, check_finite=False),
                    "floor": floor(*inputs),
                },
                args.rounds,
            )
            step, unchecked, base = (float(np.median(times[k])) for k in ("step", "no checks", "floor"))
            print(
                f"{str((n, d, m, T)):>22} {step * 1e3:7.3f}ms {unchecked * 1e3:8.3f}ms {base * 1e3:7.3f}ms "
                f"{(step - base) / step:11.1%} {(unchecked - base) / unchecked:6.1%}"
            )


if __name__ == "__main__":
    main()
