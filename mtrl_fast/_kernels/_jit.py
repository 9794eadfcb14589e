"""Jit machinery: the compile options, float32/float64 typing, lazy compilation, passes.

Every kernel is typed for float32 and float64 by one helper, C-ordered arrays only, so no input
can trigger a surprise compile. Parallel kernels are wrapped in a :class:`Pass` that owns its
work estimate and decides, per call, whether the work pays for waking the worker threads (the
parallel twin) or runs on the calling thread (the serial twin, which compiles three times faster).
"""

import os
import threading
import types
from typing import Any

import numba
import numpy as np

from .. import _profile, _runtime
from ..losses import DTYPES

# One fastmath flag set for every kernel. ``nnan`` and ``ninf`` stay out so that NaN and Inf
# still propagate and can be detected; the rest only allow reassociation and fused or
# approximate arithmetic.
FASTMATH = frozenset({"reassoc", "contract", "afn", "arcp", "nsz"})

# NumPy's error model: Numba's default (Python's) checks each float division for a zero divisor
# so as to raise ZeroDivisionError, and that branch keeps a loop with a division scalar (the
# float32 logistic loss lost its vectorisation). Divisors here are never zero, or are validated
# sizes. Cached on disk: kernels are self-contained (no globals but constants).
# Exact kernels (the sampler and its random numbers) leave fastmath out: each of their operations
# is rounded as written, so every machine computes the same bits. Every other kernel takes the
# fastmath set.
EXACT_OPTIONS: dict[str, Any] = dict(error_model="numpy", cache=True)
COMPILE_OPTIONS: dict[str, Any] = dict(EXACT_OPTIONS, fastmath=set(FASTMATH))


def options(exact=False):
    """The compile options of a kernel: :data:`EXACT_OPTIONS` or :data:`COMPILE_OPTIONS`."""
    return dict(EXACT_OPTIONS if exact else COMPILE_OPTIONS)


FLOAT_TYPES = DTYPES  # the package's dtype names, in one place


def signatures(signature):
    """The float32 and float64 versions of ``signature`` (``{f}`` stands for the float type)."""
    return [signature.format(f=f) for f in FLOAT_TYPES]


def serial_helper(py_func=None, *, exact=False):
    """A serial kernel that other kernels call: compiled, for the types it is called with, when
    the first kernel that calls it compiles (never at import). ``@serial_helper`` or
    ``@serial_helper(exact=True)`` (without fastmath)."""
    if py_func is None:
        return lambda function: serial_helper(function, exact=exact)
    return numba.njit(nogil=True, **options(exact))(py_func)


# By dtype, not ``dtype.name``: NumPy builds that string at each access (3 us, a fifth of a small
# pass's call).
_FLOAT_TYPE_OF = {np.dtype(name): name for name in FLOAT_TYPES}


def _float_type(args):
    """The float type (``"float32"`` or ``"float64"``) of the first float array among ``args``."""
    for arg in args:
        float_type = _FLOAT_TYPE_OF.get(getattr(arg, "dtype", None))
        if float_type is not None and getattr(arg, "ndim", 0) > 0:
            return float_type
    raise TypeError("a kernel needs a float32 or float64 array argument")


class LazyKernel:
    """A kernel compiled (or loaded from Numba's disk cache) on first call, for the float type of
    that call alone: ``signature_list`` has one entry per float type, in ``FLOAT_TYPES`` order (as
    :func:`signatures` makes it).

    Importing the package then costs nothing, a command can say that a first compilation is
    under way, and a run compiles only what it uses (a float32 run, no float64 kernel).
    """

    def __init__(self, py_func, signature_list, options):
        self.py_func = py_func
        self._signatures = dict(zip(FLOAT_TYPES, signature_list, strict=True))  # as signatures() orders them
        self._dispatcher = numba.njit(**options)(py_func)
        self._compiled = set()
        self._lock = threading.Lock()

    def compile(self, float_type):
        """Compile (or load from the cache) the ``float_type`` version, once."""
        if float_type not in self._compiled:
            with self._lock:  # two threads' first calls compile once
                if float_type not in self._compiled:
                    self._dispatcher.compile(self._signatures[float_type])
                    self._compiled.add(float_type)

    def __call__(self, *args):
        self.compile(_float_type(args))
        return self._dispatcher(*args)

    def on_disk(self):
        """Whether Numba's disk cache holds this kernel's index, written when it first compiled
        (``True`` where another Numba keeps its cache otherwise: nothing to announce then)."""
        try:
            return os.path.exists(self._dispatcher._cache._cache_file._index_path)
        except AttributeError:
            return True


def _serial_copy(py_func):
    """``py_func`` under another name, for its serial twin: Numba's disk cache files a function by
    its qualified name and keys an entry by its bytecode and types, not by its compile options: under
    one name, each twin would load whichever build the other had cached."""
    twin = types.FunctionType(
        py_func.__code__, py_func.__globals__, py_func.__name__ + "_serial", py_func.__defaults__, py_func.__closure__
    )
    twin.__qualname__ = py_func.__qualname__ + "_serial"
    twin.__doc__ = py_func.__doc__
    return twin


class Pass:
    """A kernel with a serial and a parallel twin, and its work estimate.

    Calling the pass runs the serial twin (``prange`` as ``range``) on the calling thread when
    ``cost(*args)`` is below :data:`mtrl_fast._runtime.PARALLEL_MIN_WORK` (elements of a plain
    elementwise pass) or the calling thread runs one thread; else the parallel twin, under the
    runtime's kernel guard (a lock only where Numba's threading layer is not thread-safe). Each twin
    compiles at its first call: a run on one thread, or on small problems, never compiles the
    parallel one, which takes about three times as long (``parallel=True``'s loop analysis and
    outlining). Both walk the same fixed chunks and reduce them in the same order, so they give the
    same bits. ``exact`` compiles both without fastmath.
    """

    def __init__(self, py_func, signature, cost, exact=False):
        typed = signatures(signature)
        self.kernel = LazyKernel(py_func, typed, dict(options(exact), nogil=True, parallel=True))
        self.serial_kernel = LazyKernel(_serial_copy(py_func), typed, dict(options(exact), nogil=True))
        self.cost = cost
        self.__name__ = py_func.__name__
        self.__doc__ = py_func.__doc__

    def parallel(self, *args):
        """Whether a call with ``args`` runs the parallel twin (see the class)."""
        # The cost first: it is the cheaper question, and a small pass needs no other.
        return self.cost(*args) >= _runtime.PARALLEL_MIN_WORK and numba.get_num_threads() > 1

    def __call__(self, *args):
        if not self.parallel(*args):
            return _profile.timed_call(self.__name__, self.serial_kernel, *args)
        with _runtime.kernel_guard():
            return _profile.timed_call(self.__name__, self.kernel, *args)


def parallel_pass(signature, cost, exact=False):
    """Decorator: a :class:`Pass` over ``py_func`` typed by ``signature``, with work ``cost``
    (``exact``: without fastmath)."""
    return lambda py_func: Pass(py_func, signature, cost, exact)
