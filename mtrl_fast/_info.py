"""What a bug report or a benchmark header needs: versions, threading, BLAS and CPU."""

import os
import platform
import sys
from importlib import metadata
from typing import Any, TextIO

import numba
import numpy as np
from threadpoolctl import threadpool_info

from . import _runtime

# Optional packages whose versions are reported when installed (read from their metadata, so
# nothing is imported).
_OPTIONAL = ("scipy", "matplotlib", "torch", "jax", "dask", "distributed")

#: Environment variables that pin OpenBLAS to one family of kernels.
BLAS_PINS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def installed_version(name: str) -> str | None:
    """The distribution's version from its metadata (nothing is imported), or ``None``."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def blas_pin_warning() -> str | None:
    """A sentence on environment variables that pin OpenBLAS's kernels, or ``None``."""
    pins = {name: os.environ[name] for name in BLAS_PINS if name in os.environ}
    if not pins:
        return None
    return (
        "OpenBLAS kernels pinned by "
        + ", ".join(f"{k}={v}" for k, v in pins.items())
        + ": BLAS timings are those of the pinned kernels, not what this CPU runs by default "
        "(unset them for the command to measure the native kernels)"
    )


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``), or ``None``."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def blas_in_use() -> list[str]:
    """Each BLAS loaded in this process, as ``"openblas 0.3.31 (SkylakeX)"``: library, version and
    the kernel family it picked."""
    return [
        f"{entry['internal_api']} {entry['version']} ({entry.get('architecture')})"
        for entry in threadpool_info()
        if entry.get("user_api") == "blas"
    ]


def config_info() -> dict[str, Any]:
    """Versions, threading, BLAS and CPU, as a dict.

    Runs one tiny parallel kernel first, so that the threading layer in use is known.
    """
    from . import __version__
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
