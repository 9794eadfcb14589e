"""Scratch arrays a step reuses from one call to the next, per Python thread.

A step's temporaries (the pre-activations, the outputs, the back-propagated gradient) are megabytes:
allocated afresh at each call, the C library maps them anew and every page faults on first touch
(about 580 faults a step at shared (1024, 256, 256, 64), a tenth to a third of its time on a 2-core
VM). A training loop calls the step with the same shapes again and again, so each thread keeps the
temporaries of its recent calls, up to ``BUDGET`` bytes in all (the least recently used go first), and
hands one back when a call asks for the same slot, shape and dtype. Nothing a step returns is scratch.
Each thread has its own, so concurrent steps in several threads never share one.

A thread Python did not start (XLA's pool, running a custom call) gets a fresh Python thread state,
and so fresh ``threading.local`` data, at every call into Python: its scratch is kept by its thread
id instead, for as long as the process lives or until :func:`release_scratch`.
"""

import threading
from collections import OrderedDict

import numpy as np

#: Bytes of scratch a thread keeps between calls; a larger temporary is allocated for its call alone.
BUDGET = 64 * 2**20

_state = threading.local()
#: The scratch of threads Python did not start, by thread id.
_foreign: dict[int, "OrderedDict[tuple, np.ndarray]"] = {}


def _kept() -> "OrderedDict[tuple, np.ndarray]":
    kept = getattr(_state, "arrays", None)
    if kept is None:
        if isinstance(threading.current_thread(), threading._DummyThread):
            kept = _foreign.setdefault(threading.get_ident(), OrderedDict())
        else:
            kept = OrderedDict()
        _state.arrays = kept
    return kept


def scratch(slot: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised array of ``shape`` and ``dtype`` for the temporary ``slot`` of a step: one this
    thread kept from an earlier call when there is one, else a new one (kept if the budget allows,
    after the least recently used)."""
    kept = _kept()
    key = (slot, tuple(shape), np.dtype(dtype))  # the dtype itself: its .str is built at each access
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


def release_scratch() -> None:
    """Give back the temporaries that steps keep for their next call (see the notes).

    Frees the calling thread's, and those of threads Python did not start (XLA's pool, which runs
    ``mtrl_fast.jax``'s custom calls), which cannot call this themselves. A later step allocates
    afresh and keeps its temporaries again.

    Notes
    -----
    Each thread keeps the temporaries of its recent steps (pre-activations, outputs, the
    back-propagated gradient), up to 64 MiB (the least recently used go first; a larger one is
    allocated for its call alone), and reuses them when a step of the same shapes asks again,
    as a training loop does. Other Python threads free their own when they end, or by calling
    this.
    """
    _state.__dict__.pop("arrays", None)
    _foreign.clear()
