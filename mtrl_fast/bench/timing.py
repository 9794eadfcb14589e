"""The one timer of the benchmarks: bursts of back-to-back calls, rounds alternating between
the things compared, medians.

A round times a burst of back-to-back calls lasting about ``BURST_S``, as a training loop makes
them, and keeps the burst's median: a lone call after an idle spell also times the wake-up of
every thread pool it uses, which a loop never pays. Alternating the things compared within each
round lets a slow spell of a shared machine hit them all alike.
"""

import time
from collections.abc import Callable

import numpy as np

from .._profile import rotated  # the one rotation, shared with the GEMM timing of "auto"

BURST_S = 0.02
BURST_MAX_CALLS = 20


def burst_calls(run: Callable[[], object]) -> int:
    """Calls per burst for a callable: one for slow calls, enough to last ``BURST_S`` for fast ones."""
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    return max(1, min(BURST_MAX_CALLS, int(BURST_S / max(seconds, 1e-9))))


def time_burst(run: Callable[[], object], calls: int) -> float:
    """Median seconds of ``calls`` back-to-back calls, after one untimed call: even a slow call
    (a burst of one) is timed as the second of a loop. After an idle spell, thread pools that
    sleep between parallel regions (GNU OpenMP under the passive policy, which MKL and PyTorch
    run on) can wake slowly for tens of milliseconds (docs/benchmarks.md has the measurement)."""
    run()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


#: Seconds slept before a timed burst, so that the thread pools of what ran just before are asleep
#: again: OpenMP and Eigen workers spin for a while after their last task, and OpenBLAS's for 2^28
#: cycles (about 0.1 s) unless told otherwise, taking a core from whatever runs next.
SETTLE_S = 0.15


def alternating_samples(
    functions: dict[str, Callable[[], object]], rounds: int, settle_s: float = 0.0
) -> dict[str, list]:
    """Burst medians of each function, ``rounds`` rounds alternating between them.

    The first call of each function (compilation, caches, first-touch pages) is outside the
    timing; ``settle_s`` is slept before each burst, so that the thread pools of the function
    timed just before are asleep again.
    """
    calls = {name: burst_calls(run) for name, run in functions.items()}
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for round_index in range(rounds):
        for name in rotated(functions, round_index):
            if settle_s:
                time.sleep(settle_s)
            samples[name].append(time_burst(functions[name], calls[name]))
    return samples


def alternating_medians(
    functions: dict[str, Callable[[], object]], rounds: int, settle_s: float = 0.0
) -> dict[str, float]:
    """Median over rounds of :func:`alternating_samples`."""
    return {name: float(np.median(times)) for name, times in alternating_samples(functions, rounds, settle_s).items()}


def time_call(function: Callable, args: tuple, repeat: int) -> tuple[float, float, float]:
    """Median, min and max seconds of ``function(*args)`` over ``repeat`` bursts, after one warm-up."""
    times = alternating_samples({"f": lambda: function(*args)}, repeat)["f"]
    return float(np.median(times)), float(min(times)), float(max(times))


def breakdown(function: Callable, args: tuple, repeat: int) -> tuple[float, dict[str, float]]:
    """Where one call's time goes: ``(median total, {part: median seconds per call})``.

    The parts are what the step logs (``mtrl_fast._profile``): the checks, each BLAS product
    (by operand shapes, summed over a call's blocks) and each fused pass. ``"outside the parts"``
    is the rest: allocation, Python, the gaps between calls.
    """
    from .._profile import recording

    function(*args)
    totals, parts = [], []
    for _ in range(repeat):
        with recording() as log:
            start = time.perf_counter()
            function(*args)
            totals.append(time.perf_counter() - start)
        per_call: dict[str, float] = {}
        for part in log:
            per_call[part.label] = per_call.get(part.label, 0.0) + part.seconds
        parts.append(per_call)
    labels = list(dict.fromkeys(label for per_call in parts for label in per_call))
    medians = {label: float(np.median([per_call.get(label, 0.0) for per_call in parts])) for label in labels}
    total = float(np.median(totals))
    medians["outside the parts"] = float(np.median([t - sum(p.values()) for t, p in zip(totals, parts)]))
    return total, medians
