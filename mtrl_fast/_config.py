"""Process-wide runtime settings, applied before Numba starts its worker threads.

Imported first by the package, so the environment is in place before any parallel kernel runs.
"""
import os
import threading
import warnings
from contextlib import nullcontext

# One fastmath flag set for every kernel. ``nnan`` and ``ninf`` stay out so that NaN and Inf
# still propagate and can be detected; the rest only allow reassociation and fused or
# approximate arithmetic.
FASTMATH = frozenset({"reassoc", "contract", "afn", "arcp", "nsz"})

# The per-task step keeps one (rows, m) block of pre-activations at a time: at most BLOCK_BYTES,
# and no more than an eighth of the inputs' size (so a step's peak memory stays within 1.25x of
# its inputs, parameters and gradients), but at least BLOCK_MIN_BYTES so that the block's BLAS
# products stay efficient.
BLOCK_BYTES = 64 * 2**20
BLOCK_MIN_BYTES = 4 * 2**20


def _libgomp_loaded():
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            return "libgomp" in maps.read()
    except OSError:
        return False


# GNU OpenMP workers busy-wait after each prange loop (OMP_WAIT_POLICY=ACTIVE-like spinning)
# and starve OpenBLAS's threads when the two alternate, as every step here does: on 2 cores a
# shared-layout step measured 10x slower with ACTIVE workers, and 1.7x slower with libgomp's
# default spinning. PASSIVE makes idle workers sleep. libgomp reads the variable
# once, when it is loaded, so it must be set before Numba starts its OpenMP pool; a value the
# user set is respected.
_WAIT_POLICY_PRESET = "OMP_WAIT_POLICY" in os.environ
_LIBGOMP_WAS_LOADED = _libgomp_loaded()
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402  (must come after the environment is set)
from numba.np.ufunc import parallel as _numba_parallel  # noqa: E402


def _layer_importable(module):
    try:
        __import__(f"numba.np.ufunc.{module}")
    except ImportError:
        return False
    return True


# Numba's ``workqueue`` layer aborts the process when two Python threads enter parallel code
# at once. Ask Numba for a thread-safe layer (TBB or OpenMP) unless the user chose one; where
# neither exists, calls are serialised by a lock instead (see ``kernel_guard``).
if "NUMBA_THREADING_LAYER" not in os.environ and not _numba_parallel._is_initialized:
    if _layer_importable("tbbpool") or _layer_importable("omppool"):
        numba.config.THREADING_LAYER = "threadsafe"

_UNSAFE_LAYER_LOCK = threading.Lock()


def threading_layer():
    """Name of Numba's threading layer, or ``None`` before Numba has started its threads."""
    try:
        return numba.threading_layer()
    except ValueError:
        return None


def kernel_guard():
    """Context under which parallel kernels run: a lock only where the layer is not thread-safe."""
    layer = threading_layer()
    if layer in ("omp", "tbb"):
        return nullcontext()
    return _UNSAFE_LAYER_LOCK


def wait_policy_warning():
    """A sentence on why OMP_WAIT_POLICY may not be in force, or ``None`` when it is."""
    if _LIBGOMP_WAS_LOADED and not _WAIT_POLICY_PRESET:
        return (
            "libgomp was loaded before mtrl_fast was imported, so OMP_WAIT_POLICY=PASSIVE may not "
            "be in force; steps can run several times slower. Import mtrl_fast first or set "
            "OMP_WAIT_POLICY=PASSIVE in the environment."
        )
    return None


if wait_policy_warning() is not None:
    warnings.warn(wait_policy_warning(), RuntimeWarning, stacklevel=2)
