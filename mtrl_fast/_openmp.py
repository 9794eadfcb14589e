"""Which OpenMP runtime a loaded library runs on, read from the dynamic linker, not from file names.

An OpenMP runtime reads its wait policy once, when it loads: whether a pool's idle workers spin
depends on which runtime that pool's library binds to and on whether that runtime was loaded
before ``mtrl_fast`` set ``OMP_WAIT_POLICY``. Several copies can be loaded at once: PyTorch's
own ``libgomp`` beside the system's one that Numba's pool links to, or a copy that a wheel bundles
under another name (scikit-learn's ``libgomp-<hash>.so``), which no other library binds to. So the
runtime is found the way the dynamic linker finds it: the address ``omp_get_max_threads`` has in
the library's scope (the global scope first, as for the library's own relocations), and the file
that address lies in (``dladdr``).
"""

import ctypes
import ctypes.util
import os

#: The symbol every OpenMP runtime exports (GNU's libgomp, LLVM's libomp, Intel's libiomp5).
_PROBE_SYMBOL = "omp_get_max_threads"


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


def loaded_files() -> frozenset[str]:
    """The real paths of the shared objects mapped into this process (empty where the platform
    does not say: ``/proc/self/maps`` is Linux's)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            paths = {line.split(None, 5)[5].strip() for line in maps if len(line.split(None, 5)) == 6}
    except OSError:
        return frozenset()
    return frozenset(os.path.realpath(path) for path in paths if path.startswith("/") and ".so" in path)


def _dladdr() -> object | None:
    for name in (None, ctypes.util.find_library("dl")):
        try:
            function = ctypes.CDLL(name).dladdr
        except (OSError, AttributeError, TypeError):
            continue
        function.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
        function.restype = ctypes.c_int
        return function
    return None


def _file_of(address: int) -> str | None:
    dladdr = _dladdr()
    info = _DlInfo()
    if dladdr is None or not dladdr(address, ctypes.byref(info)) or not info.dli_fname:  # type: ignore[operator]
        return None
    return os.path.realpath(os.fsdecode(info.dli_fname))


def runtime_of(library: str) -> str | None:
    """The real path of the OpenMP runtime that the loaded shared object ``library`` binds to, or
    ``None`` where it is not loaded or binds to none."""
    try:
        # RTLD_NOLOAD: only a handle to what is already there; nothing is loaded here.
        handle = ctypes.CDLL(library, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    except OSError:
        return None
    for scope in (ctypes.CDLL(None), handle):  # the global scope, then the library's own
        try:
            address = ctypes.cast(getattr(scope, _PROBE_SYMBOL), ctypes.c_void_p).value
        except AttributeError:
            continue
        if address:
            return _file_of(address)
    return None
