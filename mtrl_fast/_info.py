"""The report a bug report or a benchmark header needs: versions, threading, BLAS and CPU (the
platform's facts come from ``_platform``)."""

import os
import platform
import sys
from typing import Any, TextIO

import numba
import numpy as np
from threadpoolctl import threadpool_info

from . import _runtime
from ._platform import blas_pin_warning, cpu_name, installed_version

# Optional packages whose versions are reported when installed (read from their metadata, so
# nothing is imported).
_OPTIONAL = ("scipy", "matplotlib", "torch", "jax", "dask", "distributed")


def config_info() -> dict[str, Any]:
    """Versions, threading, BLAS and CPU, as a dict.

    Runs one tiny parallel kernel first, so that the threading layer in use is known.
    """
    from ._version import __version__
    from .ops import forward

    forward(np.ones((1, 1)), np.ones((1, 1)), None, np.ones((1, 1)))
    blas = [
        {key: entry.get(key) for key in ("internal_api", "version", "num_threads", "architecture", "filepath")}
        for entry in threadpool_info()
        if entry.get("user_api") == "blas"
    ]
    import llvmlite

    info = {
        "mtrl_fast": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "numba": numba.__version__,
        "llvmlite": llvmlite.__version__,
    }
    info.update({name: version for name in _OPTIONAL if (version := installed_version(name))})
    info.update(
        {
            "platform": platform.platform(),
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "threading_layer": _runtime.threading_layer(),
            "num_threads": numba.get_num_threads(),
            "NUMBA_NUM_THREADS": numba.config.NUMBA_NUM_THREADS,  # type: ignore[attr-defined]
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
            "wait_policy_warning": _runtime.wait_policy_warning(),
            "blas_pin_warning": blas_pin_warning(),
            "gemm": _gemm_line(),
            "jax_op": _jax_op_line(),
            "blas": blas,
        }
    )
    return info


def _gemm_line() -> str:
    """The GEMM the products run on, and those installed (``mtrl_fast.set_gemm``)."""
    from . import gemms

    return (
        f"{gemms.get_gemm()} (installed: {', '.join(gemms.available())}; "
        f"mtrl_fast.torch's ops: {gemms.torch_ops_gemm()})"
    )


def _jax_op_line() -> str | None:
    """How ``mtrl_fast.jax``'s ops call the kernels (XLA's FFI custom call or the host callback);
    ``None`` without JAX."""
    if installed_version("jax") is None:
        return None
    from .jax import call_path

    return call_path()


def gemm_timings_lines(timings: dict[str, Any]) -> list[str]:
    """``"auto"``'s timings (``gemms.auto_timings``) as lines: the rate of each provider at each
    product class, and the choice per dtype."""
    lines = [f"timed {timings['measured']} in {timings['seconds']} s; kept in {timings.get('path') or 'memory only'}"]
    for dtype, by_provider in timings["rates"].items():
        lines.append(f"{dtype}: chose {timings['choice'][dtype]}")
        for name, rates in by_provider.items():
            lines.append(f"  {name:>6}: " + ", ".join(f"{cls} {rate:.0f}" for cls, rate in rates.items()) + " GFLOP/s")
    return lines


def show_config(file: TextIO | None = None) -> dict[str, Any]:
    """Print versions, threading layer, thread counts, BLAS and CPU: paste it into a bug report.

    Parameters
    ----------
    file : file-like, optional
        Where to print; standard output by default.

    Returns
    -------
    dict
        The same information.
    """
    info = config_info()
    for key, value in info.items():
        if key == "blas":
            for entry in value or [{"internal_api": "none found"}]:
                print(f"{'blas':>20}: " + ", ".join(f"{k}={v}" for k, v in entry.items()), file=file)
        elif value is not None:
            print(f"{key:>20}: {value}", file=file)
    return info
