"""The runtime policy, in one place: the threading environment, serial or parallel, thread counts.

Imported first by the package, so that the environment is in place before Numba starts its
worker threads. Measured costs behind each choice are in ``docs/performance.md``.
"""

import os
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

from . import _openmp

# GNU OpenMP's idle workers spin after each parallel loop and starve OpenBLAS's threads, which
# alternate with them in every step. PASSIVE makes them sleep. libgomp reads the variable once,
# when it is loaded, so it must be set before Numba starts its OpenMP pool; a value the user set
# is respected, and MTRL_FAST_SET_WAIT_POLICY=0 leaves it unset (PyTorch's own ops, which share
# that libgomp, run faster with its default spinning; ours in the same loop then run slower).
#: The user's own OMP_WAIT_POLICY (``None`` when unset), before mtrl_fast sets its default.
USER_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY")
SETS_WAIT_POLICY = USER_WAIT_POLICY is None and os.environ.get("MTRL_FAST_SET_WAIT_POLICY", "1") != "0"
# What was loaded before the policy was set: a runtime among these read the environment before it.
_FILES_BEFORE_POLICY = _openmp.loaded_files()
if SETS_WAIT_POLICY:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

# The same for OpenBLAS's idle workers: they spin for 2^28 cycles (about 0.1 s) after each product,
# and a compiled pass that follows on the same cores (the sampler after a step, say) ran at half
# speed. 2^20 cycles (a fraction of a millisecond) keeps them awake between a step's back-to-back
# products and lets them sleep after. OpenBLAS reads the variable when it loads: this takes effect
# where mtrl_fast is imported before NumPy (its command, its worker processes), and a value the
# user set is respected. MTRL_FAST_SET_WAIT_POLICY=0 leaves it unset too.
#: The user's own OPENBLAS_THREAD_TIMEOUT (``None`` when unset).
USER_BLAS_TIMEOUT = os.environ.get("OPENBLAS_THREAD_TIMEOUT")
BLAS_TIMEOUT = "20"
if USER_BLAS_TIMEOUT is None and os.environ.get("MTRL_FAST_SET_WAIT_POLICY", "1") != "0":
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = BLAS_TIMEOUT

# Intel MKL (the ``mkl`` GEMM provider) brings its own OpenMP runtime, whose idle workers spin
# after each product unless a wait policy says otherwise, a second pool contending with ours
# (docs/threads.md has the measurement). MKL's GNU threading layer runs its products on the libgomp pool Numba's kernels already use,
# under the wait policy above. The user's MKL_THREADING_LAYER is respected.
#: The threading layer mtrl_fast asks MKL for when it loads it (``None``: MKL's own choice).
MKL_THREADING_LAYER = None if "MKL_THREADING_LAYER" in os.environ else "GNU"

import numba  # noqa: E402  (must come after the environment is set)
import numpy as np  # noqa: E402
from numba.np.ufunc import parallel as _numba_parallel  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402


def _layer_importable(module: str) -> bool:
    try:
        __import__(f"numba.np.ufunc.{module}")
    except ImportError:
        return False
    return True


# Numba's ``workqueue`` layer aborts the process when two Python threads enter parallel code at
# once. Ask Numba for a thread-safe layer (TBB or OpenMP) unless the user chose one; where neither
# exists, parallel kernels are serialised by a lock instead (see ``kernel_guard``).
if "NUMBA_THREADING_LAYER" not in os.environ and not _numba_parallel._is_initialized:
    if _layer_importable("tbbpool") or _layer_importable("omppool"):
        # numba.config's attributes come from the environment at run time; its stubs omit them.
        numba.config.THREADING_LAYER = "threadsafe"  # type: ignore[attr-defined]

_UNSAFE_LAYER_LOCK = threading.Lock()


def threading_layer() -> str | None:
    """Name of Numba's threading layer, or ``None`` before Numba has started its threads."""
    try:
        return numba.threading_layer()
    except ValueError:
        return None


def kernel_guard() -> AbstractContextManager[object]:
    """Context under which a parallel kernel runs: a lock only where the layer is not thread-safe."""
    if threading_layer() in ("omp", "tbb"):
        return nullcontext()
    return _UNSAFE_LAYER_LOCK


def runtime_spins(runtime: str | None) -> bool:
    """Whether the idle workers of the OpenMP runtime at path ``runtime`` spin between parallel
    regions: the user's ``OMP_WAIT_POLICY`` decides where there is one; else the runtimes' default
    (spinning) holds where mtrl_fast leaves the policy unset (``MTRL_FAST_SET_WAIT_POLICY=0``) or
    where the runtime read its environment before mtrl_fast set it (it was loaded first)."""
    if USER_WAIT_POLICY is not None:
        return USER_WAIT_POLICY.strip().upper() != "PASSIVE"
    return not SETS_WAIT_POLICY or (runtime is not None and runtime in _FILES_BEFORE_POLICY)


_TORCH_RUNTIME: list[str] = []  # found once: a loaded library's runtime does not change


def torch_runtime() -> str | None:
    """The OpenMP runtime PyTorch's own ops run on (``None``: PyTorch is not imported, or runs on none)."""
    if _TORCH_RUNTIME:
        return _TORCH_RUNTIME[0]
    location = getattr(sys.modules.get("torch"), "__file__", None)
    if location is None:
        return None
    found = _openmp.runtime_of(os.path.join(os.path.dirname(location), "lib", "libtorch_cpu.so"))
    if found is not None:
        _TORCH_RUNTIME.append(found)
    return found


def numba_runtime() -> str | None:
    """The OpenMP runtime of Numba's thread pool (``None``: the pool has not started, or is not OpenMP's)."""
    location = getattr(sys.modules.get("numba.np.ufunc.omppool"), "__file__", None)
    return None if location is None else _openmp.runtime_of(location)


def wait_policy_warning() -> str | None:
    """A sentence naming each OpenMP runtime in use (Numba's pool, PyTorch's) that was loaded before
    mtrl_fast set ``OMP_WAIT_POLICY=PASSIVE``, and so spins; ``None`` when there is none."""
    if not SETS_WAIT_POLICY:
        return None
    early = sorted({path for path in (numba_runtime(), torch_runtime()) if path and runtime_spins(path)})
    if not early:
        return None
    return (
        f"the OpenMP runtime {', '.join(early)} was loaded before mtrl_fast was imported, so "
        "OMP_WAIT_POLICY=PASSIVE may not be in force: its idle workers spin, and steps can run several "
        "times slower. Import mtrl_fast first or set OMP_WAIT_POLICY=PASSIVE in the environment."
    )


_WARNED: set[str] = set()


def warn_if_spinning() -> None:
    """Warn (once per message) where :func:`wait_policy_warning` has something to say."""
    message = wait_policy_warning()
    if message is not None and message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def openmp_workers_spin() -> bool:
    """Whether the OpenMP workers that PyTorch's ops run on spin between parallel regions (see
    :func:`runtime_spins`; read from the runtime PyTorch bound to, whatever its file's name)."""
    return runtime_spins(torch_runtime())


warn_if_spinning()  # Numba's pool or PyTorch's, where they started before this import


# --- serial or parallel -------------------------------------------------------------------------

#: A parallel pass pays only beyond this much work, counted in elements of a plain elementwise
#: pass: waking Numba's workers costs more than a small pass, and inside a step OpenBLAS's workers,
#: which spin for a while after each product, hold the other cores anyway. Below it a pass runs its
#: serial twin (``_kernels._jit.Pass``).
PARALLEL_MIN_WORK = 1 << 21


# --- thread counts ------------------------------------------------------------------------------


def _check_count(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an integer number of threads; got {type(k).__name__}")
    limit = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]
    if not 1 <= k <= limit:
        raise ValueError(f"k must be between 1 and {limit} (NUMBA_NUM_THREADS); got {k}")
    return int(k)


def get_num_threads() -> int:
    """Number of threads the kernels use in the calling thread.

    Returns
    -------
    int
    """
    return numba.get_num_threads()


def set_num_threads(k: int) -> None:
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
def num_threads(k: int) -> Iterator[int]:
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
