"""Intel MKL's GEMM through its CBLAS interface, from the ``mkl`` wheel (the ``mkl`` extra).

Loaded by ctypes, which releases the GIL during each call; MKL's GEMM is thread-safe, so several
Python threads may run products at once, as with the other providers.
"""

import ctypes
import importlib.metadata
import os
from typing import Any

import numpy as np

from . import _runtime

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
# MKL_Set_Threading_Layer's codes (mkl_service.h).
_LAYERS = {"INTEL": 0, "SEQUENTIAL": 1, "GNU": 3, "TBB": 4}
_INT_MAX = 2**31 - 1  # the LP64 interface's dimensions and leading dimensions are 32-bit


def library_path() -> str:
    """Path of ``libmkl_rt`` as the ``mkl`` distribution installed it."""
    for file in importlib.metadata.files("mkl") or ():
        if os.path.basename(str(file)).startswith("libmkl_rt.so"):
            return os.path.realpath(str(file.locate()))
    raise ImportError("the mkl distribution holds no libmkl_rt library")


def load() -> "Gemm":
    """Load MKL once per process and return its ``matmul``."""
    library = ctypes.CDLL(library_path(), mode=ctypes.RTLD_GLOBAL)
    layer = _runtime.MKL_THREADING_LAYER
    if layer is not None and _layer_loadable(layer):  # before any other MKL call (see _runtime)
        library.MKL_Set_Threading_Layer(ctypes.c_int(_LAYERS[layer]))
    return Gemm(library)


def _layer_loadable(layer: str) -> bool:
    """Whether the layer's OpenMP runtime loads here (MKL aborts on a layer it cannot load)."""
    if layer != "GNU":
        return True
    try:
        ctypes.CDLL("libgomp.so.1")
    except OSError:
        return False
    return True


def _operand(a: np.ndarray) -> tuple[np.ndarray, int, int]:
    """``(array, transpose flag, leading dimension)`` that CBLAS reads in row-major order, without a
    copy where the strides allow it."""
    item = a.itemsize
    rows, cols = a.shape
    s0, s1 = a.strides
    if (s1 == item or cols == 1) and s0 % item == 0 and s0 // item >= max(1, cols):
        return a, _NO_TRANS, s0 // item
    if (s0 == item or rows == 1) and s1 % item == 0 and s1 // item >= max(1, rows):
        return a, _TRANS, s1 // item
    a = np.ascontiguousarray(a)
    return a, _NO_TRANS, max(1, cols)


class Gemm:
    """``matmul(left, right, out=None)`` for 2-D float32/float64 operands of one dtype; anything
    else (other dtypes, stacks, sizes past 32-bit) goes to NumPy."""

    def __init__(self, library: Any) -> None:
        self.routines = {np.dtype(np.float32): library.cblas_sgemm, np.dtype(np.float64): library.cblas_dgemm}
        self.scalars = {np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double}

    def __call__(self, left: np.ndarray, right: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        dtype = left.dtype
        routine = self.routines.get(dtype)
        if (
            routine is None
            or right.dtype != dtype
            or left.ndim != 2
            or right.ndim != 2
            or left.shape[1] != right.shape[0]
            or max(*left.shape, *right.shape) > _INT_MAX
            or 0 in left.shape + right.shape
            or (out is not None and (out.dtype != dtype or out.shape != (left.shape[0], right.shape[1])))
        ):
            return np.matmul(left, right, out=out)
        M, K = left.shape
        N = right.shape[1]
        target = out if out is not None and out.flags.c_contiguous else np.empty((M, N), dtype=dtype)
        a, trans_a, lda = _operand(left)
        b, trans_b, ldb = _operand(right)
        if max(lda, ldb) > _INT_MAX:
            return np.matmul(left, right, out=out)
        scalar = self.scalars[dtype]
        pointer = ctypes.c_void_p
        routine(
            _ROW_MAJOR, trans_a, trans_b, M, N, K, scalar(1.0),
            pointer(a.ctypes.data), lda, pointer(b.ctypes.data), ldb,
            scalar(0.0), pointer(target.ctypes.data), max(1, N),
        )  # fmt: skip
        if out is not None and target is not out:
            out[...] = target
            return out
        return target
