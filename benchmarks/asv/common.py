"""What the asv suite shares: seeded inputs, the step's FLOPs and its products alone, a timer, and the
look-up of what a version has.

The suite measures every release since 0.1.0 with today's code, so it imports nothing of the package
but its public API (``loss_and_grad``, ``forward``, ``reference``; ``alternating_round`` since
0.2.0; the framework ops and the paper's package where installed). Anything a version lacks raises
``NotImplementedError`` in ``setup``, which asv records as a skip, not a failure.
"""

import importlib
import time

import numpy as np

SHARED, PER_TASK = "shared", "per-task"
LAYOUTS = (SHARED, PER_TASK)

#: The paper's training round: a head step on ``A`` with the first layer frozen, then one step of
#: ``W`` and ``b`` with weight decay.
ROUND = {"head_steps": 1, "head_lr": 0.1, "lr": 0.1, "weight_decay": 0.01}


def public(name, module="mtrl_fast"):
    """``module.name`` (a module's attribute, or a submodule), or ``NotImplementedError`` naming
    what this version of the package lacks."""
    try:
        found = importlib.import_module(module)
        return getattr(found, name) if hasattr(found, name) else importlib.import_module(f"{module}.{name}")
    except ImportError as error:
        lacking = f"{module} has no {name}" if error.name == f"{module}.{name}" else str(error)
        raise NotImplementedError(f"{module}.{name} is not in this version or environment ({lacking})") from None


def inputs(layout, n, d, m, T, dtype="float32", seed=0):
    """``(X, Y, W, b, A)`` of one step: Gaussian inputs, weights scaled to unit-variance
    pre-activations and outputs, labels -1/+1."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d) if layout == SHARED else (T, n, d)).astype(dtype)
    W = (rng.standard_normal((m, d)) / np.sqrt(d)).astype(dtype)
    b = (0.1 * rng.standard_normal(m)).astype(dtype)
    A = (rng.standard_normal((T, m)) / np.sqrt(m)).astype(dtype)
    Y = np.where(rng.random((T, n)) < 0.5, -1, 1).astype(dtype)
    return X, Y, W, b, A


def flops(layout, n, d, m, T):
    """Floating-point operations of one step: shared ``4 n d m + 6 n m T``, per-task
    ``4 T n d m + 5 T n m`` (the forward and backward products with ``W``, and the work per output
    and hidden unit), as ``mtrl-fast bench`` counts them."""
    if layout == SHARED:
        return 4 * n * d * m + 6 * n * m * T
    return 4 * T * n * d * m + 5 * T * n * m


def products(X, Y, W, b, A):
    """A callable that runs the step's matrix products alone, on NumPy's BLAS into arrays allocated
    once: what a step costs at the least, whatever a version does around them."""
    T, m = A.shape
    if X.ndim == 2:
        n = X.shape[0]
        H, R, D, gA, gW = (np.empty(s, X.dtype) for s in ((n, m), (T, n), (n, m), (T, m), W.shape))

        def run():
            np.matmul(X, W.T, out=H)
            np.matmul(A, H.T, out=R)
            np.matmul(R, H, out=gA)
            np.matmul(R.T, A, out=D)
            np.matmul(D.T, X, out=gW)

        return run
    rows = X.reshape(-1, X.shape[-1])
    Z, gW = np.empty((rows.shape[0], m), X.dtype), np.empty(W.shape, X.dtype)

    def run():
        np.matmul(rows, W.T, out=Z)
        np.matmul(Z.T, rows, out=gW)

    return run


def medians(functions, rounds=7, burst_s=0.02):
    """Median seconds of each function, rounds alternating between them; each round times a burst of
    back-to-back calls (as a training loop makes them) and keeps its median."""
    calls = {}
    for name, run in functions.items():
        start = time.perf_counter()
        run()
        calls[name] = max(1, min(20, int(burst_s / max(time.perf_counter() - start, 1e-9))))
    samples = {name: [] for name in functions}
    for _ in range(rounds):
        for name, run in functions.items():
            run()
            times = []
            for _ in range(calls[name]):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
            samples[name].append(float(np.median(times)))
    return {name: float(np.median(values)) for name, values in samples.items()}
