"""Scratch arrays a step reuses from one call to the next, per Python thread.

A step's temporaries (the pre-activations, the outputs, the back-propagated gradient) are megabytes:
allocated afresh at each call, the C library maps them anew and every page faults on first touch
(about 580 faults a step at shared (1024, 256, 256, 64), a tenth to a third of its time on a 2-core
VM). A training loop calls the step with the same shapes again and again, so each thread keeps the
temporaries of its recent calls, up to ``BUDGET`` bytes in all (the least recently used go first), and
hands one back when a call asks for the same slot, shape and dtype. Nothing a step returns is scratch.
Each thread has its own, so concurrent steps in several threads never share one.
"""

import threading
from collections import OrderedDict

import numpy as np

#: Bytes of scratch a thread keeps between calls; a larger temporary is allocated for its call alone.
BUDGET = 64 * 2**20

_state = threading.local()


def _kept() -> "OrderedDict[tuple, np.ndarray]":
    kept = getattr(_state, "arrays", None)
    if kept is None:
        kept = _state.arrays = OrderedDict()
    return kept


def scratch(slot: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised array of ``shape`` and ``dtype`` for the temporary ``slot`` of a step: one this
    thread kept from an earlier call when there is one, else a new one (kept if the budget allows,
    after the least recently used)."""
    kept = _kept()
    key = (slot, tuple(shape), np.dtype(dtype).str)
    found = kept.get(key)
    if found is not None:
        kept.move_to_end(key)
        return found
    array = np.empty(shape, dtype=dtype)
    if array.nbytes <= BUDGET:
        total = sum(other.nbytes for other in kept.values())
        while kept and total + array.nbytes > BUDGET:
            total -= kept.popitem(last=False)[1].nbytes
        kept[key] = array
    return array


def release() -> None:
    """Drop this thread's scratch arrays."""
    _state.__dict__.pop("arrays", None)
