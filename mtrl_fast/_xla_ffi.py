"""XLA's foreign-function interface, read from Python: a custom call whose operands XLA hands over in
place, without a host callback.

XLA calls a handler ``XLA_FFI_Error* handler(XLA_FFI_CallFrame*)`` (``xla/ffi/api/c_api.h`` in openxla/xla).
Here the handler is a ``ctypes`` callback: it reads the call frame by its C layout, wraps each operand and
result buffer as a NumPy array over XLA's own memory (no copy), runs a Python function on them, and turns any
exception into an XLA error, which JAX raises as ``JaxRuntimeError`` with the message. The callback takes the
GIL; XLA releases it while it executes a computation, as it does for ``jax.pure_callback``.

The layout is versioned, not frozen. The structures read here (the call frame, its argument and result lists,
a buffer, the API's version and its error constructor, the metadata that XLA asks a handler for) are the same
in API versions 0.1 (jaxlib 0.4.34 to 0.8) and 0.3 (jaxlib 0.10): ``SUPPORTED_VERSIONS``. :func:`probe` asks
XLA which version it runs before anything is registered for real; for any other version the callers keep to
``jax.pure_callback``.
"""

import ctypes
import functools
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import numpy as np

#: FFI API versions ``(major, minor)`` whose layout of the parts read here is the one below.
SUPPORTED_VERSIONS = ((0, 1), (0, 2), (0, 3))

# The version a handler reports in XLA's metadata query: the oldest one whose layout it reads.
_HANDLER_VERSION = (0, 1)
_EXTENSION_METADATA = 1
_STAGE_EXECUTE = 3
_ERROR_INVALID_ARGUMENT = 3
_ERROR_INTERNAL = 13
_DTYPES: dict[int, np.dtype] = {11: np.dtype(np.float32), 12: np.dtype(np.float64)}


class _Extension(ctypes.Structure):
    pass


_Extension._fields_ = [
    ("struct_size", ctypes.c_size_t),
    ("type", ctypes.c_int),
    ("next", ctypes.POINTER(_Extension)),
]


class _Version(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.c_void_p),
        ("major", ctypes.c_int),
        ("minor", ctypes.c_int),
    ]


class _ErrorCreateArgs(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.c_void_p),
        ("message", ctypes.c_char_p),
        ("errc", ctypes.c_int),
    ]


_ErrorCreate = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.POINTER(_ErrorCreateArgs))


class _Api(ctypes.Structure):
    # Only the leading fields: the version and the error constructor.
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.c_void_p),
        ("version", _Version),
        ("internal_api", ctypes.c_void_p),
        ("error_create", _ErrorCreate),
    ]


class _Buffer(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.c_void_p),
        ("dtype", ctypes.c_int),
        ("data", ctypes.c_void_p),
        ("rank", ctypes.c_int64),
        ("dims", ctypes.POINTER(ctypes.c_int64)),
    ]


class _Buffers(ctypes.Structure):
    # XLA_FFI_Args and XLA_FFI_Rets share this layout; their entries are buffers only here.
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.c_void_p),
        ("size", ctypes.c_int64),
        ("types", ctypes.POINTER(ctypes.c_int)),
        ("items", ctypes.POINTER(ctypes.POINTER(_Buffer))),
    ]


class _Attrs(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.c_void_p),
        ("size", ctypes.c_int64),
        ("types", ctypes.c_void_p),
        ("names", ctypes.c_void_p),
        ("attrs", ctypes.c_void_p),
    ]


class _CallFrame(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.POINTER(_Extension)),
        ("api", ctypes.POINTER(_Api)),
        ("ctx", ctypes.c_void_p),
        ("stage", ctypes.c_int),
        ("args", _Buffers),
        ("rets", _Buffers),
        ("attrs", _Attrs),
    ]


class _Metadata(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("version", _Version), ("traits", ctypes.c_uint32)]


class _MetadataExtension(ctypes.Structure):
    _fields_ = [("base", _Extension), ("metadata", ctypes.POINTER(_Metadata))]


_Handler = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.POINTER(_CallFrame))

#: What a handler runs: the operands and the results as arrays over XLA's buffers; it fills the results.
Work = Callable[[list[np.ndarray], list[np.ndarray]], None]


class FFIError(ValueError):
    """A call XLA made that the handler cannot serve (a dtype or a frame it does not know)."""


class _Interface:
    """A buffer as NumPy's array interface describes it: the quickest way to an array over memory
    NumPy does not own (a third of the time of ``np.frombuffer`` on a ctypes array)."""

    __slots__ = ("__array_interface__",)

    def __init__(self, data: int, shape: tuple[int, ...], typestr: str, read_only: bool) -> None:
        self.__array_interface__ = {"data": (data, read_only), "shape": shape, "typestr": typestr, "version": 3}


#: The most dimensions a buffer may claim (NumPy's own limit is 64).
MAX_RANK = 32


def _array(pointer: Any, what: str, read_only: bool) -> np.ndarray:
    """The buffer as an array over XLA's memory: read-only for an operand, writable for a result
    (whose shape the work checks before it writes)."""
    buffer = pointer.contents
    dtype = _DTYPES.get(buffer.dtype)
    if dtype is None:
        raise FFIError(f"{what} must be float32 or float64 (XLA dtype code {buffer.dtype})")
    if not 0 <= buffer.rank <= MAX_RANK:
        raise FFIError(f"{what} has rank {buffer.rank}")
    shape = tuple(buffer.dims[: buffer.rank])
    if any(size < 0 for size in shape):
        raise FFIError(f"{what} has shape {shape}")
    return np.asarray(_Interface(buffer.data, shape, dtype.str, read_only))


def _error(api: Any, message: str, code: int) -> int:
    args = _ErrorCreateArgs(ctypes.sizeof(_ErrorCreateArgs), None, message.encode("utf-8", "replace"), code)
    return api.contents.error_create(ctypes.byref(args))


def _answer_metadata(frame: Any) -> None:
    extension = ctypes.cast(frame.extension_start, ctypes.POINTER(_MetadataExtension)).contents
    metadata = extension.metadata.contents
    major, minor = _HANDLER_VERSION
    metadata.version = _Version(ctypes.sizeof(_Version), None, major, minor)
    metadata.traits = 0


def version_of(frame: Any) -> tuple[int, int]:
    version = frame.api.contents.version
    return (version.major, version.minor)


def handler(work: Work, on_version: Callable[[tuple[int, int]], None] | None = None) -> Any:
    """A ``ctypes`` function pointer XLA can call, running ``work(operands, results)``.

    ``on_version``, if given, sees the API version of every frame (the probe records it).
    Operands arrive read-only; ``work`` must check the results' shapes and dtypes before it writes
    (XLA hands over whatever a caller of the target declared). Nothing escapes the callback: an
    exception becomes an XLA error with its message (``ValueError`` and ``TypeError`` as invalid
    arguments, anything else as internal).
    """

    def call(frame_pointer: Any) -> int | None:
        frame = frame_pointer.contents
        try:
            if on_version is not None:
                on_version(version_of(frame))
            if frame.extension_start and frame.extension_start.contents.type == _EXTENSION_METADATA:
                _answer_metadata(frame)
                return None
            if frame.stage != _STAGE_EXECUTE:
                return None  # registered for the execute stage only; nothing to prepare
            operands = [_array(frame.args.items[k], f"operand {k}", True) for k in range(frame.args.size)]
            results = [_array(frame.rets.items[k], f"result {k}", False) for k in range(frame.rets.size)]
            work(operands, results)
            return None
        except (ValueError, TypeError) as error:
            return _error(frame.api, f"{type(error).__name__}: {error}", _ERROR_INVALID_ARGUMENT)
        except BaseException as error:  # noqa: BLE001 - an exception must not cross into XLA
            return _error(frame.api, f"{type(error).__name__}: {error}", _ERROR_INTERNAL)

    return _Handler(call)


# Handlers must outlive every computation that calls them: they stay here for the process's life.
_REGISTERED: dict[str, Any] = {}
_REGISTER_LOCK = threading.Lock()
#: Seconds to wait inside a first registration, between the check and the registration: a test
#: widens the window there, so that racing threads meet in it every time.
_RACE_WINDOW = 0.0


def register(name: str, work: Work, on_version: Callable[[tuple[int, int]], None] | None = None) -> None:
    """Register ``work`` as the CPU custom call ``name`` (once per process; later calls keep the first);
    ``on_version`` as in :func:`handler`. Thread-safe: XLA refuses a second registration of a name."""
    if name in _REGISTERED:
        return
    import jax

    with _REGISTER_LOCK:
        if name in _REGISTERED:
            return
        time.sleep(_RACE_WINDOW)
        function = handler(work, on_version)
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(function), platform="cpu", api_version=1)
        _REGISTERED[name] = function


def call(name: str, results: Sequence[Any], operands: Sequence[Any], vmap_method: str) -> Any:
    """``jax.ffi.ffi_call`` of a registered target: a tuple of results, one per ``results`` struct."""
    import jax

    return jax.ffi.ffi_call(name, tuple(results), vmap_method=vmap_method)(*operands)


Answer = TypeVar("Answer")


class once(Generic[Answer]):
    """A function of no arguments run once per process, whichever threads ask first and at once
    (``functools.cache`` lets each of them run it); ``cache_clear()`` forgets the answer."""

    def __init__(self, function: Callable[[], Answer]) -> None:
        self._function = function
        self._lock = threading.Lock()
        self._answer: list[Answer] = []
        functools.update_wrapper(self, function)

    def __call__(self) -> Answer:
        if not self._answer:
            with self._lock:
                if not self._answer:
                    time.sleep(_RACE_WINDOW)
                    self._answer.append(self._function())
        return self._answer[0]

    def cache_clear(self) -> None:
        with self._lock:
            self._answer.clear()


@once
def probe() -> tuple[tuple[int, int] | None, str]:
    """``(version, "")`` where XLA's FFI runs here at a supported version; ``(version or None, reason)``
    otherwise.

    Registers a probe target and runs it once under ``jit``: the version is read from XLA's own call
    frame (its metadata query, or the call itself), and the probe checks that its result came back.
    The probe runs in a thread of its own, outside any trace: the first op is often traced inside a
    user's ``jit``, where a nested ``jit`` call would be staged, not run.
    """
    answer: list[tuple[tuple[int, int] | None, str]] = []
    thread = threading.Thread(target=lambda: answer.append(_run_probe()), name="mtrl_fast FFI probe")
    thread.start()
    thread.join()
    return answer[0]


def _run_probe() -> tuple[tuple[int, int] | None, str]:
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None, "JAX is not installed"
    if not all(hasattr(getattr(jax, "ffi", None), name) for name in ("ffi_call", "register_ffi_target", "pycapsule")):
        return None, f"JAX {jax.__version__} has no jax.ffi with ffi_call, register_ffi_target and pycapsule"
    seen: list[tuple[int, int]] = []

    def check(version: tuple[int, int]) -> None:
        seen.append(version)
        if version not in SUPPORTED_VERSIONS:
            raise FFIError(f"FFI API version {version[0]}.{version[1]} is not one this package reads")

    def double(operands: list[np.ndarray], results: list[np.ndarray]) -> None:
        np.multiply(operands[0], 2, out=results[0])

    name = "mtrl_fast_probe"
    try:
        register(name, double, on_version=check)
        x = jnp.arange(3, dtype=jnp.float32)
        got = jax.jit(lambda x: call(name, [jax.ShapeDtypeStruct(x.shape, x.dtype)], [x], "sequential")[0])(x)
        got = np.asarray(got)
    except Exception as error:  # noqa: BLE001 - any failure means: keep to the callback
        version = seen[0] if seen else None
        return version, f"the FFI probe failed: {type(error).__name__}: {str(error).splitlines()[0]}"
    if not seen:
        return None, "XLA never called the FFI probe"
    if not np.array_equal(got, [0.0, 2.0, 4.0]):
        return seen[0], f"the FFI probe returned {got.tolist()}, not [0, 2, 4]"
    return seen[0], ""
