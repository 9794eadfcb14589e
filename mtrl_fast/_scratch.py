"""Scratch arrays a step reuses from one call to the next, per Python thread.

A step's temporaries (the pre-activations, the outputs, the back-propagated gradient) are megabytes:
allocated afresh at each call, the C library maps them anew and every page faults on first touch
(about 580 faults a step at shared (1024, 256, 256, 64), a tenth of its time on a 2-core VM). A
training loop calls the step with the same shapes again and again, so each thread keeps its last
temporaries, up to ``BUDGET`` bytes in all, and hands them back when the next call asks for the same
shape and dtype. Nothing a step returns is scratch. Each thread has its own, so concurrent steps in
several threads never share one.
"""

import threading

import numpy as np

#: Bytes of scratch a thread keeps between calls; a larger temporary is allocated for its call alone.
BUDGET = 32 * 2**20

_state = threading.local()


def scratch(slot: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised array of ``shape`` and ``dtype`` for the temporary ``slot`` of a step: the one
    this thread used last time for ``slot`` when it fits, else a new one (kept if the budget allows)."""
    kept: dict[str, np.ndarray] = _state.__dict__.setdefault("arrays", {})
    found = kept.get(slot)
    if found is not None and found.shape == shape and found.dtype == dtype:
        return found
    array = np.empty(shape, dtype=dtype)
    kept.pop(slot, None)
    if sum(other.nbytes for other in kept.values()) + array.nbytes <= BUDGET:
        kept[slot] = array
    return array


def release() -> None:
    """Drop this thread's scratch arrays."""
    _state.__dict__.pop("arrays", None)
