"""The shared-layout step walked over row tiles, in the two shapes of parallelism a fused step could take,
timed against the step as the library runs it (whole-array products, passes between them).

    python benchmarks/tiled_step.py [--rounds 11] [--tiles 256,512,1024]

For a tile of rows: its first-layer product, bias and ReLU, the outputs, the loss and its slopes, the tile's
head gradient, the back-propagated ``(R^T A) * mask`` and its bias sums, each pass applied while the tile is
in cache; ``gW = D^T X`` stays one product over all rows (accumulating it per tile would add an ``(m, d)``
sum per tile). Two ways to run the tiles:

- ``sequence``: tiles one after the other, each product on the GEMM provider's own threads;
- ``threads``: tiles spread over a pool of Python threads (one per core), each tile's products on a
  single-threaded BLAS and its passes compiled serially (Numba's parallel kernels, called from several
  Python threads at once, run one at a time); partial sums kept per tile and added in tile order, so the
  result does not depend on the thread count.

Logistic loss, float32, the benchmarks' inputs (``bench.workload.step_inputs``); each variant is checked
against the library's step first. Prints medians in ms and each variant's time over the library's.
"""

import argparse
import os
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from threadpoolctl import ThreadpoolController

import mtrl_fast
from mtrl_fast import _kernels as kernels
from mtrl_fast import gemms
from mtrl_fast._kernels._jit import COMPILE_OPTIONS
from mtrl_fast._platform import blas_in_use, cpu_name
from mtrl_fast._validate import check_problem
from mtrl_fast.bench.timing import alternating_medians
from mtrl_fast.bench.workload import step_inputs
from mtrl_fast.losses import loss_id

SHAPES = [(1024, 256, 256, 64), (2048, 512, 256, 128), (4096, 1024, 512, 256), (8192, 256, 256, 64)]
LOGISTIC = loss_id("logistic")


def _serial(parallel_pass):
    """The pass's kernel compiled without ``parallel``: Numba's parallel kernels called from several
    Python threads at once run one at a time, so each tile thread runs its passes serially."""
    return numba.njit(nogil=True, **COMPILE_OPTIONS)(parallel_pass.kernel.py_func)


PARALLEL_PASSES = (kernels.bias_relu, kernels.loss_slopes, kernels.relu_mask_colsum)
SERIAL_PASSES = tuple(_serial(kernel) for kernel in PARALLEL_PASSES)


def _tile(p, matmul, scale, r0, r1, H, D, gA_out, gb_out, passes):
    """One tile's work: fills ``H[r0:r1]``, ``D[r0:r1]``, the tile's head gradient and bias sums;
    returns its loss sum."""
    bias_relu, loss_slopes, relu_mask_colsum = passes
    H_t = H[r0:r1]
    matmul(p.X[r0:r1], p.W.T, out=H_t)
    bias_relu(H_t, p.b)
    R_t = matmul(p.A, H_t.T)
    total = loss_slopes(R_t, np.ascontiguousarray(p.Y[:, r0:r1]), LOGISTIC, scale)
    matmul(R_t, H_t, out=gA_out)
    D_t = D[r0:r1]
    matmul(R_t.T, p.A, out=D_t)
    relu_mask_colsum(D_t, H_t, gb_out, kernels.chunk_count(r1 - r0))
    return total


def tiled_step(p, scale, rows, pool=None, blas=None):
    """The step over tiles of ``rows`` rows: in sequence (``pool=None``) or on ``pool``'s threads."""
    matmul = gemms.matmul(gemms.resolve(gemms.get_gemm(), p.X.dtype))
    H = np.empty((p.n, p.m), dtype=p.X.dtype)
    D = np.empty_like(H)
    starts = list(range(0, p.n, rows))
    gA_tiles = np.empty((len(starts), p.T, p.m), dtype=p.X.dtype)
    gb_tiles = np.empty((len(starts), p.m), dtype=p.X.dtype)

    passes = PARALLEL_PASSES if pool is None else SERIAL_PASSES

    def run(k):
        return _tile(p, matmul, scale, starts[k], min(p.n, starts[k] + rows), H, D, gA_tiles[k], gb_tiles[k], passes)

    if pool is None:
        totals = [run(k) for k in range(len(starts))]
    else:
        with blas.limit(limits=1):
            totals = list(pool.map(run, range(len(starts))))
    gW = matmul(D.T, p.X)
    return sum(totals) * scale, (gW, gb_tiles.sum(axis=0), gA_tiles.sum(axis=0))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--tiles", default="256,512,1024")
    args = parser.parse_args()
    tile_rows = [int(value) for value in args.tiles.split(",")]
    cores = os.cpu_count() or 1
    pool = ThreadPoolExecutor(cores)
    blas = ThreadpoolController().select(user_api="blas")
    print(f"# {cpu_name()}, NumPy's BLAS {blas_in_use()}, GEMM {gemms.get_gemm()}; ms, medians of {args.rounds}")
    for n, d, m, T in SHAPES:
        X, Y, W, b, A = step_inputs("shared", n, d, m, T)
        p = check_problem(X, W, b, A, Y, loss="logistic", check_finite=False)
        scale = 1.0 / (T * n)
        want_value, want = mtrl_fast.ops.fused_step(p, LOGISTIC, scale)
        functions = {"library": lambda p=p, scale=scale: mtrl_fast.ops.fused_step(p, LOGISTIC, scale)}
        for rows in (rows for rows in tile_rows if rows < n):
            for way, runner in (("sequence", None), ("threads", pool)):
                value, (gW, gb, gA) = tiled_step(p, scale, rows, runner, blas)
                assert abs(value - want_value) <= 1e-5 * abs(want_value), (way, rows, value, want_value)
                for got, expected in ((gW, want.W), (gb, want.b), (gA, want.A)):
                    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=1e-6)
                functions[f"{way} {rows}"] = lambda p=p, s=scale, r=rows, w=runner: tiled_step(p, s, r, w, blas)
        medians = alternating_medians(functions, args.rounds)
        base = medians["library"]
        cells = ", ".join(f"{name} {1e3 * seconds:.2f} ({seconds / base:.2f})" for name, seconds in medians.items())
        print(f"shared {(n, d, m, T)}: {cells}", flush=True)


if __name__ == "__main__":
    main()
