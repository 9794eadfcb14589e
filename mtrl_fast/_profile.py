"""Where time goes, recorded per Python thread: one :class:`Recorder` shape, two channels.

A recorder holds, per thread, the sink that code below a :meth:`Recorder.recording` block logs to;
with no block open, logging costs one attribute lookup. :data:`STEPS` logs each part of a step (the
checks, every product with its operands, every fused pass) for the time breakdown (``mtrl-fast step
--breakdown``) and the benchmarks' list of a step's products (``ops.record_products``);
``mtrl_fast.paper.clock`` sums a paper cell's time by part (sampling, kernels, metrics, probe). The
channels are apart so that a cell's clock never holds a step's operands alive.
"""

import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, NamedTuple


class Recorder:
    """A per-thread slot for the current sink: an object with ``add(label, seconds, operands=None)``
    (and ``merge(other)`` for ``nested="merge"``).

    Parameters
    ----------
    nested : {"merge", "set aside"}
        What a recording opened inside another does to the outer one's sink when it ends:
        ``"merge"`` adds its entries to it (``sink.merge``), ``"set aside"`` leaves it as it was
        (the caller adds what it wants, as a shard's parts from another process).
    """

    def __init__(self, nested: str):
        if nested not in ("merge", "set aside"):
            raise ValueError(f"nested must be 'merge' or 'set aside'; got {nested!r}")
        self._merge = nested == "merge"
        self._state = threading.local()

    def current(self) -> Any:
        """The sink recording in this thread, or ``None``."""
        return getattr(self._state, "sink", None)

    @contextmanager
    def recording(self, sink: Any) -> Iterator[Any]:
        """Make ``sink`` the current one (in this thread) for the block."""
        outer = getattr(self._state, "sink", None)
        self._state.sink = sink
        try:
            yield sink
        finally:
            self._state.sink = outer
            if self._merge and outer is not None:
                outer.merge(sink)

    def timed_call(self, label, function, *args, operands=None, **kwargs):
        """``function(*args, **kwargs)``, logged under ``label`` (with ``operands``) when recording."""
        sink = getattr(self._state, "sink", None)
        if sink is None:
            return function(*args, **kwargs)
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            sink.add(label, time.perf_counter() - start, operands)

    @contextmanager
    def part(self, label) -> Iterator[None]:
        """Log the block's time under ``label`` (nothing recording: nothing to do)."""
        sink = getattr(self._state, "sink", None)
        if sink is None:
            yield
            return
        start = time.perf_counter()
        try:
            yield
        finally:
            sink.add(label, time.perf_counter() - start)


class Part(NamedTuple):
    """One logged part of a step: its label, its wall time, and a product's ``(left, right)``."""

    label: str
    seconds: float
    operands: tuple[Any, Any] | None = None


class Parts(list[Part]):
    """A step's parts, in the order they ran."""

    def add(self, label, seconds, operands=None):
        self.append(Part(label, seconds, operands))

    def merge(self, other):
        self.extend(other)


#: The parts of a step; a recording inside another adds its parts to the outer one's too.
STEPS = Recorder(nested="merge")
timed_call = STEPS.timed_call


def log() -> Parts | None:
    """The active log of a step's parts, or ``None`` when nothing records."""
    return STEPS.current()


def recording() -> AbstractContextManager[Parts]:
    """Log the parts of every step called inside, in this Python thread. A recording inside
    another adds its parts to the outer one's too when it ends."""
    return STEPS.recording(Parts())


def rotated(names: Any, round_index: int) -> list[Any]:
    """``names`` started at ``round_index`` (modulo their count): each round of alternating timings
    starts with another, so that drift and the first-in-round penalty hit all alike (the benchmarks'
    rounds and ``"auto"``'s GEMM timing)."""
    names = list(names)
    shift = round_index % max(1, len(names))
    return names[shift:] + names[:shift]
