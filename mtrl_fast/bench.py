"""Benchmark helpers: reproducible step inputs and same-process median timings."""
import time

import numpy as np


def step_inputs(layout, n, d, m, T, dtype="float32", seed=0):
    """Inputs of one ``loss_and_grad`` step with real values from a fixed seed.

    Returns ``(X, Y, W, b, A)``: Gaussian inputs, weights scaled to unit-variance
    pre-activations and outputs, labels -1/+1.
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d) if layout == "shared" else (T, n, d)).astype(dtype)
    W = (rng.standard_normal((m, d)) / np.sqrt(d)).astype(dtype)
    b = (0.1 * rng.standard_normal(m)).astype(dtype)
    A = (rng.standard_normal((T, m)) / np.sqrt(m)).astype(dtype)
    Y = np.where(rng.random((T, n)) < 0.5, -1, 1).astype(dtype)
    return X, Y, W, b, A


def time_call(function, args, repeat):
    """Median, min and max seconds of ``function(*args)`` over ``repeat`` calls, after one warm-up."""
    function(*args)  # compile / load caches / touch pages outside the timing
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function(*args)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), float(min(times)), float(max(times))
