"""Where a step's time goes: when recording is on (in this Python thread), the checks, every BLAS
product and every fused pass log their wall time; otherwise they pay one attribute lookup."""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_state = threading.local()


def log():
    """The active log of ``(label, seconds)``, or ``None`` when nothing records."""
    return getattr(_state, "log", None)


def timed_call(label, function, *args, **kwargs):
    """``function(*args, **kwargs)``, logged under ``label`` when recording."""
    entries = getattr(_state, "log", None)
    if entries is None:
        return function(*args, **kwargs)
    start = time.perf_counter()
    try:
        return function(*args, **kwargs)
    finally:
        entries.append((label, time.perf_counter() - start))


@contextmanager
def recording() -> Iterator[list[tuple[str, float]]]:
    """Log the labelled parts of every step called inside, in this Python thread."""
    entries: list[tuple[str, float]] = []
    previous = getattr(_state, "log", None)
    _state.log = entries
    try:
        yield entries
    finally:
        _state.log = previous
