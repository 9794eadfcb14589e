"""What a step does and where its time goes: when recording is on (in this Python thread), the
checks, every BLAS product (with its operands) and every fused pass log a :class:`Part`; otherwise
they pay one attribute lookup. One recorder serves the time breakdown (``mtrl-fast step
--breakdown``) and the benchmarks' list of a step's products (``ops.record_products``)."""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

_state = threading.local()


class Part(NamedTuple):
    """One logged part of a step: its label, its wall time, and a product's ``(left, right)``."""

    label: str
    seconds: float
    operands: tuple[Any, Any] | None = None


def log() -> list[Part] | None:
    """The active log, or ``None`` when nothing records."""
    return getattr(_state, "log", None)


def timed_call(label, function, *args, operands=None, **kwargs):
    """``function(*args, **kwargs)``, logged under ``label`` (with ``operands``) when recording."""
    entries = getattr(_state, "log", None)
    if entries is None:
        return function(*args, **kwargs)
    start = time.perf_counter()
    try:
        return function(*args, **kwargs)
    finally:
        entries.append(Part(label, time.perf_counter() - start, operands))


@contextmanager
def recording() -> Iterator[list[Part]]:
    """Log the parts of every step called inside, in this Python thread. A recording inside
    another adds its parts to the outer one's too when it ends."""
    entries: list[Part] = []
    previous = getattr(_state, "log", None)
    _state.log = entries
    try:
        yield entries
    finally:
        _state.log = previous
        if previous is not None:
            previous.extend(entries)


def rotated(names: Any, round_index: int) -> list[Any]:
    """``names`` started at ``round_index`` (modulo their count): each round of alternating timings
    starts with another, so that drift and the first-in-round penalty hit all alike (the benchmarks'
    rounds and ``"auto"``'s GEMM timing)."""
    names = list(names)
    shift = round_index % max(1, len(names))
    return names[shift:] + names[:shift]
