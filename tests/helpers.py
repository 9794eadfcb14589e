"""Test helpers: exact test problems, the project-wide tolerance and closeness checks."""

import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np

from mtrl_fast import losses

# One tolerance per dtype, relative to the largest entry of the reference result.
RTOL = {np.float32: 2e-5, np.float64: 1e-12}

#: Step sizes ``(n, d, m, T)`` every kernel is checked at: edge sizes, then ordinary ones, then
#: chunking cases (many tasks per parallel chunk; tasks spanning several chunks).
SIZES = [
    (1, 1, 1, 1),
    (1, 5, 4, 3),
    (6, 1, 4, 3),
    (6, 5, 1, 3),
    (6, 5, 4, 1),
    (37, 19, 23, 7),
    (1, 8, 16, 600),
    (700, 9, 17, 3),
]


def make_problem(layout="shared", dtype=np.float64, n=5, d=4, m=3, T=2, bias=True, seed=0, labels="sign"):
    """Inputs whose pre-activations and outputs are exact in float32 and never zero.

    ``X`` holds small integers, ``W`` and ``A`` integers over a power of two and ``b`` odd
    numbers over a larger power of two, so ``X W^T + b`` is exact in both dtypes and never
    sits on the ReLU kink; float32 and float64 then agree up to the loss derivative's rounding.
    """
    rng = np.random.default_rng(seed)
    x_shape = (n, d) if layout == "shared" else (T, n, d)
    X = rng.integers(-3, 4, size=x_shape).astype(dtype)
    W = (rng.integers(-16, 17, size=(m, d)) / 16).astype(dtype)
    b = ((2 * rng.integers(-32, 32, size=m) + 1) / 64).astype(dtype) if bias else None
    A = (rng.integers(-8, 9, size=(T, m)) / 32).astype(dtype)
    if labels == "sign":
        Y = np.where(rng.random((T, n)) < 0.5, -1, 1).astype(dtype)
    else:
        Y = rng.standard_normal((T, n)).astype(dtype)
    return X, Y, W, b, A


def assert_close(actual, expected, dtype, scale=None):
    """``actual`` matches ``expected`` within the dtype's tolerance, relative to ``scale``.

    ``scale`` defaults to max |expected|; pass the size of the summands where ``expected`` is a
    sum that cancels.
    """
    expected = np.asarray(expected)
    actual = np.asarray(actual)
    assert actual.shape == expected.shape
    if scale is None:
        scale = float(np.abs(expected).max(initial=0.0))
    scale = max(scale, 1e-30)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=RTOL[dtype] * scale)


def gradient_scales(problem, loss):
    """Bounds on each gradient entry's summands, ``|R| |A| |X|`` and alike.

    Every gradient entry is a mean of ``T n`` terms that can cancel to nearly zero; rounding
    errors scale with the terms, not with their sum, so the tolerance must too.
    """
    X, Y, W, b, A = problem
    Z = X @ W.T + (0 if b is None else b)
    H = np.maximum(Z, 0)
    F = np.einsum("tm,tnm->tn", A, H) if X.ndim == 3 else A @ H.T
    slope = float(np.abs(losses.slope(loss, F.astype(np.float64), Y)).max())
    a, x, h = (float(np.abs(v).max()) for v in (A, X, H))
    return {"W": slope * a * x, "b": slope * a, "A": slope * h}


def assert_grads_close(grads, expected, problem, loss, dtype):
    """Gradients agree within the dtype's tolerance of their summands' size; ``b`` None alike."""
    scales = gradient_scales(problem, loss)
    for name in ("W", "b", "A"):
        got, want = getattr(grads, name), getattr(expected, name)
        if want is None:
            assert got is None, name
            continue
        assert got.dtype == dtype, name
        assert_close(got, want, dtype, scale=max(scales[name], float(np.abs(want).max())))


def random_problem(layout="shared", dtype=np.float64, n=7, d=4, m=5, T=3, bias=True, seed=0, labels="sign"):
    """Gaussian inputs, for gradient checks by finite differences: with or without bias, every
    pre-activation and hinge margin is at least 1e-3 away from its kink."""
    for attempt in range(1000):
        rng = np.random.default_rng([seed, attempt])
        X = rng.standard_normal((n, d) if layout == "shared" else (T, n, d))
        W = rng.standard_normal((m, d)) / np.sqrt(d)
        b = 0.3 * rng.standard_normal(m) if bias else None
        A = rng.standard_normal((T, m))
        Y = rng.standard_normal((T, n)) if labels == "real" else np.where(rng.random((T, n)) < 0.5, -1.0, 1.0)
        Z = X @ W.T + (0 if b is None else b)
        H = np.maximum(Z, 0)
        F = A @ H.T if X.ndim == 2 else np.einsum("tm,tnm->tn", A, H)
        if np.abs(Z).min() > 1e-3 and np.abs(Y * F - 1).min() > 1e-3:
            return tuple(None if a is None else a.astype(dtype) for a in (X, Y, W, b, A))
    raise AssertionError("no kink-free draw found")


def run_python(code, timeout=300, **env):
    """Run ``code`` in a fresh interpreter, as a user's script: outside the checkout (so that it
    imports the installed package), with the environment this process had before mtrl_fast set
    ``OMP_WAIT_POLICY`` (and no ``NUMBA_THREADING_LAYER``), plus ``env``."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "NUMBA_THREADING_LAYER")}
    full_env.update(env)
    tests_dir = os.path.dirname(os.path.abspath(__file__))  # so that the code can import helpers
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [tests_dir, full_env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=tempfile.gettempdir(),
    )
