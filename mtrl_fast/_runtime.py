"""The runtime policy, in one place: the threading environment, serial or parallel, thread counts.

Imported first by the package, so that the environment is in place before Numba starts its
worker threads. Measured costs behind each choice are in ``docs/performance.md``.
"""

import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext


def _libgomp_loaded() -> bool:
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            return "libgomp" in maps.read()
    except OSError:
        return False


# GNU OpenMP's idle workers spin after each parallel loop and starve OpenBLAS's threads, which
# alternate with them in every step. PASSIVE makes them sleep. libgomp reads the variable once,
# when it is loaded, so it must be set before Numba starts its OpenMP pool; a value the user set
# is respected, and MTRL_FAST_SET_WAIT_POLICY=0 leaves it unset (PyTorch's own ops, which share
# that libgomp, run faster with its default spinning; ours in the same loop then run slower).
#: The user's own OMP_WAIT_POLICY (``None`` when unset), before mtrl_fast sets its default.
USER_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY")
SETS_WAIT_POLICY = USER_WAIT_POLICY is None and os.environ.get("MTRL_FAST_SET_WAIT_POLICY", "1") != "0"
_LIBGOMP_WAS_LOADED = _libgomp_loaded()
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


def wait_policy_warning() -> str | None:
    """A sentence on why OMP_WAIT_POLICY may not be in force, or ``None`` when it is."""
    if _LIBGOMP_WAS_LOADED and SETS_WAIT_POLICY:
        return (
            "libgomp was loaded before mtrl_fast was imported, so OMP_WAIT_POLICY=PASSIVE may not "
            "be in force; steps can run several times slower. Import mtrl_fast first or set "
            "OMP_WAIT_POLICY=PASSIVE in the environment."
        )
    return None


def openmp_workers_spin() -> bool:
    """Whether GNU OpenMP's idle workers spin between parallel regions here: the passive policy is
    not in force because libgomp was loaded first (PyTorch imported before mtrl_fast), or the user
    chose another policy (``OMP_WAIT_POLICY``, ``MTRL_FAST_SET_WAIT_POLICY=0``)."""
    if USER_WAIT_POLICY is not None:
        return USER_WAIT_POLICY.strip().upper() != "PASSIVE"
    return not SETS_WAIT_POLICY or _LIBGOMP_WAS_LOADED


_WARNING = wait_policy_warning()
if _WARNING is not None:
    warnings.warn(_WARNING, RuntimeWarning, stacklevel=2)


# --- serial or parallel -------------------------------------------------------------------------

#: A parallel pass pays only beyond this much work, counted in elements of a plain elementwise
#: pass: waking Numba's workers costs more than a small pass, and inside a step OpenBLAS's workers,
#: which spin for a while after each product, hold the other cores anyway.
PARALLEL_MIN_WORK = 1 << 21


@contextmanager
def threads_for(work: int) -> Iterator[None]:
    """Run the kernels called inside on the calling thread alone when ``work`` is below
    ``PARALLEL_MIN_WORK``. Numba's thread count is per Python thread, so this is thread-safe."""
    previous = numba.get_num_threads()
    if work >= PARALLEL_MIN_WORK or previous == 1:
        yield
        return
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


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
