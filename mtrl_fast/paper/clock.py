"""Where a cell's time goes: sampling (inputs and labels, one pass), the kernels (head and
first-layer steps), the metrics and the downstream probe.

A :class:`Clock` is made current for a block with :func:`recording` (on the package's recorder, its
own channel: ``mtrl_fast._profile``); code anywhere below times its part with :func:`part`, which
costs nothing when no clock is recording. A shard, which may run in another process, records on a
clock of its own (the caller's is set aside meanwhile) and returns its parts, which the caller adds
to its own clock: every second is counted once.
"""

from contextlib import AbstractContextManager

from .._profile import Recorder

#: The parts, in report order; whatever a cell spends elsewhere is ``other``.
PARTS = ("sampling", "kernels", "metrics", "probe", "other")

_CELLS = Recorder(nested="set aside")
#: Count the block's time towards a part on the current clock (none: nothing to do).
part = _CELLS.part


class Clock:
    """Seconds spent in each part."""

    def __init__(self) -> None:
        self.parts: dict[str, float] = {}

    def add(self, name, seconds, operands=None):
        self.parts[name] = self.parts.get(name, 0.0) + seconds

    def add_parts(self, parts):
        for name, seconds in parts.items():
            self.add(name, seconds)


def recording() -> AbstractContextManager[Clock]:
    """Make a new :class:`Clock` the current one for the block (in this thread), setting aside the
    one that was current until the block ends."""
    return _CELLS.recording(Clock())


def add_parts(parts):
    """Add parts recorded elsewhere (a shard's) to the current clock."""
    current = _CELLS.current()
    if current is not None:
        current.add_parts(parts)


def with_other(parts, total):
    """``parts`` in :data:`PARTS` order, with ``other`` = ``total`` less the named parts."""
    named = {name: parts.get(name, 0.0) for name in PARTS if name != "other"}
    named["other"] = max(0.0, total - sum(named.values()))
    return named
