"""The compiled sampler: its normals are N(0, 1) and independent, its labels are the family's, its
draws do not depend on threads or shards; and every statistical check here rejects a deliberately
broken generator, so that a pass means something.

The broken generators are built from the same Philox and Box-Muller pieces, each with one flaw:
a key that ignores the task, a lane (row) that repeats its neighbour's counter, and a Box-Muller
whose second output is ``r sin 2 theta`` (normal, uncorrelated with the first, but dependent on it).
"""

import hashlib

import numba
import numpy as np
import pytest
from scipy import stats

import mtrl_fast
from mtrl_fast._kernels._random import minus_two_log_uniform32, philox, unit_circle32
from mtrl_fast.paper import sampling
from mtrl_fast.paper.tasks import make_task_family

T, N, D = 8, 512, 64
SIGMAS = 6.0  # a check rejects beyond this many standard errors: a false alarm is ~1e-9 per statistic

GOOD, IGNORES_TASK, REPEATED_LANE, DEPENDENT_PAIR = (
    "good",
    "key ignores the task",
    "a lane repeats",
    "dependent Box-Muller pair",
)


def _family(d=D, r=3, tasks=T, **options):
    return make_task_family(d, r, tasks, np.random.default_rng([d, r, tasks]), **options)


def _draw(key=(11, 12, 0, 0), dtype=np.float32, tasks=T, n=N, d=D, **options):
    family = _family(d=d, tasks=tasks, **options)
    return family.sample_tasks(0, tasks, n, key, "per-task", dtype)


@numba.njit
def _broken_draw(keys, n, d, flaw):
    """A float32 generator with one flaw (1: key ignores the task, 2: a repeated lane, 3: a
    dependent second Box-Muller output), else as the sampler draws."""
    out = np.empty((keys.shape[0], n, d))
    zero = np.uint64(0)
    for t in range(keys.shape[0]):
        k0, k1 = (keys[0, 0], keys[0, 1]) if flaw == 1 else (keys[t, 0], keys[t, 1])
        for i in range(n):
            row = (i // 2) * 2 if flaw == 2 and i % 8 == 3 else i  # lane 3 of 8 repeats lane 2
            for block in range(d // 4):
                w0, w1, w2, w3 = philox(np.uint64(block), np.uint64(row), zero, zero, k0, k1)
                for half, (wa, wb) in enumerate(((w0, w1), (w2, w3))):
                    radius = np.sqrt(minus_two_log_uniform32(wa))
                    c, s = unit_circle32(wb)
                    second = radius * 2.0 * s * c if flaw == 3 else radius * s
                    out[t, i, 4 * block + 2 * half] = radius * c
                    out[t, i, 4 * block + 2 * half + 1] = second
    return out


def _generate(kind, key=(11, 12, 0, 0)):
    """``X (T, N, D)`` in float64 from the real sampler (``good``) or a broken twin."""
    if kind == GOOD:
        return _draw(key)[0].astype(np.float64)
    keys, _ = sampling.task_keys(key, 0, T)
    flaw = {IGNORES_TASK: 1, REPEATED_LANE: 2, DEPENDENT_PAIR: 3}[kind]
    return _broken_draw(keys, N, D, flaw)


# --- the checks: each returns whether the sample passes ------------------------------------------


def moments_ok(x):
    x = x.ravel()
    n = x.size
    z = [
        x.mean() * np.sqrt(n),
        (x.var() - 1) / np.sqrt(2 / n),
        stats.skew(x) / np.sqrt(6 / n),
        (stats.kurtosis(x)) / np.sqrt(24 / n),
    ]
    return max(abs(v) for v in z) < SIGMAS


def normal_ks_ok(x):
    return stats.kstest(x.ravel(), "norm").pvalue > 1e-6


def _corr_ok(a, b):
    a, b = a.ravel(), b.ravel()
    return abs(np.corrcoef(a, b)[0, 1]) * np.sqrt(a.size) < SIGMAS


def tasks_independent_ok(X):
    return all(_corr_ok(X[t], X[t + 1]) and _corr_ok(X[t] ** 2, X[t + 1] ** 2) for t in range(X.shape[0] - 1))


def rows_independent_ok(X):
    """Each row against the next (vector lanes are rows): values and squares."""
    return all(_corr_ok(X[:, lane::8], X[:, lane + 1 :: 8]) for lane in range(7))


def serial_ok(X):
    """Along a row, lags 1 to 4, values and squares (a Box-Muller pair sits at lag 1)."""
    for lag in range(1, 5):
        for phase in range(4):  # each position within a Philox block on its own
            a, b = (
                X[:, :, phase : D - lag : 4],
                X[:, :, phase + lag :: 4][:, :, : X[:, :, phase : D - lag : 4].shape[2]],
            )
            if not (_corr_ok(a, b) and _corr_ok(a**2, b**2)):
                return False
    return True


CHECKS = {
    "moments": moments_ok,
    "Kolmogorov-Smirnov": normal_ks_ok,
    "tasks": tasks_independent_ok,
    "rows": rows_independent_ok,
    "serial": serial_ok,
}
#: Which checks must catch which flaw.
CATCHES = {IGNORES_TASK: ["tasks"], REPEATED_LANE: ["rows"], DEPENDENT_PAIR: ["serial"]}


@pytest.mark.parametrize("check", CHECKS)
def test_the_sampler_passes_every_check(check):
    assert CHECKS[check](_generate(GOOD))


@pytest.mark.parametrize("flaw, check", [(flaw, check) for flaw, checks in CATCHES.items() for check in checks])
def test_each_check_rejects_its_broken_generator(flaw, check):
    assert not CHECKS[check](_generate(flaw)), f"the {check} check let '{flaw}' through"


def test_the_broken_pair_keeps_normal_marginals_so_only_the_dependence_check_sees_it():
    X = _generate(DEPENDENT_PAIR)
    assert moments_ok(X[:, :, 1::2]) and normal_ks_ok(X[:, :, 1::2])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normals_in_both_dtypes(dtype):
    X, _ = _draw(dtype=dtype, n=2048)
    assert X.dtype == dtype
    x = X.astype(np.float64)
    assert moments_ok(x) and normal_ks_ok(x)


def test_keys_rounds_and_phases_give_independent_draws():
    base = _generate(GOOD, (11, 12, 0, 0))
    for key in ((11, 12, 1, 0), (11, 12, 0, 1), (11, 13, 0, 0), (12, 12, 0, 0)):
        assert _corr_ok(base, _generate(GOOD, key)), key


@pytest.mark.parametrize("kind", ["linear", "relu-teacher"])
@pytest.mark.parametrize("layout", ["per-task", "shared"])
def test_labels_are_the_familys_labels_of_the_drawn_inputs(kind, layout):
    family = _family(d=37, kind=kind)
    X, Y = family.sample_tasks(0, T, 100, (1, 2, 3, 0), layout, np.float32)
    assert X.shape == ((T, 100, 37) if layout == "per-task" else (100, 37)) and Y.shape == (T, 100)
    np.testing.assert_array_equal(Y, family.labels(X.astype(np.float64)))


def test_label_noise_flips_the_expected_share_independently_per_task():
    clean = _family(noise=0.0)
    noisy = _family(noise=0.2)
    X, Y = clean.sample_tasks(0, T, 4000, (1, 2, 0, 0), "per-task", np.float32)
    Xn, Yn = noisy.sample_tasks(0, T, 4000, (1, 2, 0, 0), "per-task", np.float32)
    np.testing.assert_array_equal(X, Xn)  # the same inputs: flips come from another counter
    flipped = Y != Yn
    assert abs(flipped.mean() - 0.2) < SIGMAS * np.sqrt(0.2 * 0.8 / flipped.size)
    assert _corr_ok(flipped[0].astype(float), flipped[1].astype(float))


def test_draws_are_the_same_whatever_the_threads_and_the_shards():
    family = _family(tasks=20)
    with mtrl_fast.num_threads(1):
        X1, Y1 = family.sample_tasks(0, 20, 37, (5, 6, 7, 1), "per-task", np.float32)
    with mtrl_fast.num_threads(2):
        X2, Y2 = family.sample_tasks(0, 20, 37, (5, 6, 7, 1), "per-task", np.float32)
        Xs, Ys = family.sample_tasks(7, 5, 37, (5, 6, 7, 1), "per-task", np.float32)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(Y1, Y2)
    np.testing.assert_array_equal(Xs, X1[7:12])
    np.testing.assert_array_equal(Ys, Y1[7:12])


def test_rows_do_not_depend_on_how_many_are_drawn():
    """A row's counter is its index: drawing 5 rows or 37 gives the same first 5."""
    short, _ = _draw(n=5)
    long, _ = _draw(n=37)
    np.testing.assert_array_equal(short, long[:, :5])


# The bits of a small draw, as every machine must compute them (no fastmath, no libm call): a
# change of CPU or of compiler that moved one bit fails here.
GOLDEN = {np.float32: "51ac54054ce79a3a", np.float64: "eea4e2d71dad0d54"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_same_bits_on_every_machine(dtype):
    X, _ = _draw(dtype=dtype, tasks=3, n=33, d=21)  # the inputs alone: M comes from LAPACK's QR
    digest = hashlib.sha256(X.tobytes()).hexdigest()[:16]
    assert digest == GOLDEN[dtype], digest


@pytest.mark.parametrize("key", [(1, 2, 3), (2**32, 0, 0, 0), (-1, 0, 0, 0)])
def test_bad_keys_are_refused(key):
    with pytest.raises(ValueError, match="key must be four integers"):
        sampling.task_keys(key, 0, 1)
