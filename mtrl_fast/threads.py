"""Thread control for the kernels and the BLAS products between them, and a config report."""
import os
import platform
import sys
from contextlib import contextmanager

import numba
import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from . import _config


def _check_count(k):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an integer number of threads; got {type(k).__name__}")
    limit = numba.config.NUMBA_NUM_THREADS
    if not 1 <= k <= limit:
        raise ValueError(f"k must be between 1 and {limit} (NUMBA_NUM_THREADS); got {k}")
    return int(k)


def get_num_threads():
    """Number of threads the kernels use in the calling thread.

    Returns
    -------
    int
    """
    return numba.get_num_threads()


def set_num_threads(k):
    """Use ``k`` threads for the kernels and for the BLAS products of a step.

    Parameters
    ----------
    k : int
        From 1 to ``NUMBA_NUM_THREADS`` (by default the number of cores).

    Notes
    -----
    Numba's count is per Python thread (set it in each thread that calls the kernels); the BLAS
    limit is process-wide.
    """
    k = _check_count(k)
    numba.set_num_threads(k)
    threadpool_limits(limits=k, user_api="blas")


@contextmanager
def num_threads(k):
    """Run a block with ``k`` threads, then restore the previous settings.

    Parameters
    ----------
    k : int
        From 1 to ``NUMBA_NUM_THREADS``.

    Examples
    --------
    >>> import mtrl_fast
    >>> with mtrl_fast.num_threads(1):
    ...     mtrl_fast.get_num_threads()
    1
    """
    k = _check_count(k)
    previous = numba.get_num_threads()
    with threadpool_limits(limits=k, user_api="blas"):
        numba.set_num_threads(k)
        try:
            yield k
        finally:
            numba.set_num_threads(previous)


def config_info():
    """What a bug report needs: versions, threading, BLAS and CPU, as a dict.

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
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import llvmlite
    import scipy

    return {
        "mtrl_fast": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "numba": numba.__version__,
        "llvmlite": llvmlite.__version__,
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threading_layer": _config.threading_layer(),
        "num_threads": numba.get_num_threads(),
        "NUMBA_NUM_THREADS": numba.config.NUMBA_NUM_THREADS,
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "wait_policy_warning": _config.wait_policy_warning(),
        "blas": blas,
    }


def show_config(file=None):
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
