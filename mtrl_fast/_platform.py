"""Facts of the platform a process runs on (CPU, memory, installed versions, the BLAS loaded): a
leaf that every part may import, reading what is there and changing nothing."""

import os
import platform
from importlib import metadata

from threadpoolctl import threadpool_info

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
