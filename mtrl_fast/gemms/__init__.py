"""Where a step's matrix products run: the GEMM providers, the choice among them, and ``"auto"``.

A step spends most of its time in a few large products, so the library behind them decides its
speed: NumPy's BLAS (the default, always there), PyTorch's matmul (the BLAS of a PyTorch user's
own code; ``mtrl_fast.torch``'s ops use it), or Intel MKL (the ``mkl`` extra). ``"auto"`` times
the installed providers once per machine on the step's product shapes, keeps the result on disk,
and runs each dtype's products on the fastest. Every provider runs on the arrays' own memory.

The package's modules: ``providers`` (the registry of GEMMs and their loaders), ``setting`` (the
process default and the per-thread block) and ``auto`` (the timings and their cache on disk).
"""

from .auto import (
    MAX_CLASS_LOSS,
    MIN_GAIN,
    PRODUCT_CLASSES,
    auto_timings,
    cache_dir,
    machine_key,
    provider_medians,
)
from .providers import AUTO, PROVIDERS, Matmul, Provider, available, check, matmul
from .setting import chosen, gemm, get_gemm, resolve, set_gemm, torch_ops_gemm

__all__ = [
    "AUTO",
    "MAX_CLASS_LOSS",
    "MIN_GAIN",
    "PRODUCT_CLASSES",
    "PROVIDERS",
    "Matmul",
    "Provider",
    "auto_timings",
    "available",
    "cache_dir",
    "check",
    "chosen",
    "gemm",
    "get_gemm",
    "machine_key",
    "matmul",
    "provider_medians",
    "resolve",
    "set_gemm",
    "torch_ops_gemm",
]
