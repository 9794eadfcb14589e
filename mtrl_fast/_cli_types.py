"""Value checks for the command line's options: each takes the option's text and returns its value,
or raises ``argparse.ArgumentTypeError`` saying what it expected (argparse adds the option's name);
and the two errors a command raises for options that fail later (a missing extra, options that do
not fit together).
"""

import argparse
import math
import os
from pathlib import Path

from .losses import LAYOUTS


def _fail(message):
    raise argparse.ArgumentTypeError(message)


def _integer(text):
    try:
        return int(text)
    except ValueError:
        _fail(f"expected an integer, got {text!r}")


def _number(text):
    try:
        value = float(text)
    except ValueError:
        _fail(f"expected a number, got {text!r}")
    if not math.isfinite(value):
        _fail(f"expected a finite number, got {text!r}")
    return value


def positive_int(text):
    value = _integer(text)
    if value < 1:
        _fail(f"expected an integer of at least 1, got {value}")
    return value


def nonnegative_int(text):
    value = _integer(text)
    if value < 0:
        _fail(f"expected a non-negative integer, got {value}")
    return value


def positive_ints(text):
    """Comma-separated positive integers, at least one: ``50,100,200``."""
    values = tuple(_integer(part.strip()) for part in text.split(",") if part.strip())
    if not values:
        _fail("expected comma-separated integers, got none")
    small = [v for v in values if v < 1]
    if small:
        _fail(f"expected integers of at least 1, got {small[0]}")
    return values


def positive_float(text):
    value = _number(text)
    if value <= 0:
        _fail(f"expected a positive number, got {text}")
    return value


def nonnegative_float(text):
    value = _number(text)
    if value < 0:
        _fail(f"expected a non-negative number, got {text}")
    return value


def probability_below_half(text):
    """A label-flip probability: at 1/2 or above the labels carry no signal (or the opposite one)."""
    value = _number(text)
    if not 0 <= value < 0.5:
        _fail(f"expected a probability in [0, 0.5), got {text}")
    return value


def thread_count(text):
    """From 1 to the threads Numba may use (``NUMBA_NUM_THREADS``, by default the core count)."""
    value = positive_int(text)
    limit = int(os.environ.get("NUMBA_NUM_THREADS") or os.cpu_count() or 1)
    if value > limit:
        _fail(f"expected at most {limit} (this machine's cores, or NUMBA_NUM_THREADS), got {value}")
    return value


def choices(allowed):
    """Comma-separated values, each one of ``allowed``: ``float32,float64``."""

    def parse(text):
        values = tuple(part.strip() for part in text.split(",") if part.strip())
        if not values:
            _fail(f"expected comma-separated values from {', '.join(allowed)}, got none")
        unknown = [v for v in values if v not in allowed]
        if unknown:
            _fail(f"unknown value {unknown[0]!r}; choose from {', '.join(allowed)}")
        return values

    return parse


def gemm_name(text):
    """A GEMM setting (``mtrl_fast.set_gemm``) whose provider is installed."""
    from . import gemms

    try:
        return gemms.check(text.strip())
    except ValueError as error:
        _fail(str(error))


_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def memory_size(text):
    """Bytes, from ``500M``, ``2G``, ``1.5G`` or a plain number of bytes (at least 1 MiB)."""
    cleaned = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = cleaned[-1:] if cleaned[-1:] in _UNITS else ""
    try:
        value = float(cleaned[: len(cleaned) - len(unit)])
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value * _UNITS[unit] < 2**20:
        _fail(f"expected a size of at least 1M (such as 500M or 2G), got {text!r}")
    return int(value * _UNITS[unit])


def scheduler_address(text):
    """A Dask scheduler's address: ``[protocol://]host:port``, the port in 1-65535."""
    protocol, _, rest = text.rpartition("://")
    host, _, port = rest.rpartition(":")
    if protocol not in ("", "tcp", "tls", "ws", "wss", "ucx") or not host or not port.isdigit():
        _fail(f"expected a Dask scheduler address such as tcp://127.0.0.1:8786, got {text!r}")
    if not 1 <= int(port) <= 65535:
        _fail(f"expected a port between 1 and 65535 in the scheduler address, got {port} in {text!r}")
    return text


def existing_file(text):
    """A file that exists and can be read."""
    path = Path(text).expanduser()
    if not path.is_file():
        _fail(f"no such file: {text!r}")
    if not os.access(path, os.R_OK):
        _fail(f"cannot read {text}: permission denied")
    return str(path)


def output_folder(text):
    """A folder to write into: it exists as a folder, or can be created, and is writable."""
    if not text.strip():
        _fail("expected a folder name, got an empty string")
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        _fail(f"{text} is a file, not a folder")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        _fail(f"cannot create {text}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        _fail(f"cannot write in {existing}: permission denied")
    return str(path)


class MissingExtra(Exception):
    """An optional part's dependencies are not installed."""


class OptionError(Exception):
    """Options that are each valid but do not work together (or do not fit this machine)."""


def cell_size(text):
    """``400,1000`` -> (d, T)."""
    values = positive_ints(text)
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected D,T such as 400,1000, got {text!r}")
    return values


def shapes(text):
    """``shared:1024,256,256,64;per-task:256,512,256,64`` -> [(layout, (n, d, m, T)), ...]"""
    shapes = []
    for item in filter(None, (part.strip() for part in text.split(";"))):
        layout, _, sizes = item.partition(":")
        values = positive_ints(sizes)
        if layout not in LAYOUTS or len(values) != 4:
            raise argparse.ArgumentTypeError(f"expected LAYOUT:n,d,m,T with LAYOUT one of {LAYOUTS}, got {item!r}")
        shapes.append((layout, values))
    return shapes
