"""The compiled sampler: its normals are N(0, 1) and independent, its labels are the family's, its
draws do not depend on threads or shards; and every statistical check here is paired with broken
generators it rejects, in both dtypes, so that a pass means something.

The structural flaws are built from the same Philox and Box-Muller pieces as the sampler, in the
float32 path (four normals a block from 32-bit uniforms) and the float64 path (two a block, the
radius from a 52-bit uniform ``w0 << 20 | w1 >> 12``, the angle from a 32-bit word whose top two
bits pick the quadrant), each with one flaw: a key that ignores the task, a lane (row) that
repeats its neighbour's counter, a Box-Muller whose second output is ``r sin 2 theta`` (normal,
uncorrelated with the first, but dependent on it), an angle whose quadrant bits are dropped. The
law flaws change the real draw's values: a 1% scale, a mean shift of 0.01, values rounded to a
grid of 0.2, a wrong tail (a Student-t with 5 degrees of freedom, a uniform; both of variance 1)
and rare outliers (one value in 10^4 replaced by +-8, as a radius that overflows now and then).

Sizes, by a power calculation. The moments check rejects at ``SIGMAS`` = 6 standard errors; over
``n`` values a mean shift ``mu`` moves the mean's statistic by ``mu sqrt(n)`` and a scale ``1 + e``
the variance's by ``(2 e + e^2) sqrt(n / 2)``. With ``n = 2^20`` (``LAW_N`` rows of ``D``, ``T``
tasks) the 0.01 shift sits at 10.2 and the 1% scale at 14.6 standard errors: each is missed with
probability below 1e-5 (``Phi(6 - 10.2)``), and a correct sampler is refused with probability
about 1e-8 per statistic. Rounding to a grid of ``h`` = 0.2 adds ``h^2 / 12`` to the variance (2.4
standard errors, which the moments check lets through) and moves the CDF by about
``phi(0) h / 2`` = 0.04, which the Kolmogorov-Smirnov check, with its threshold ``p > 1e-6``
(``D sqrt(n)`` below 2.7), sees 15 times over. Rare outliers move the CDF by at most 1e-4 (``D
sqrt(n)`` 0.1: Kolmogorov-Smirnov lets them through) and the kurtosis by ``1e-4 (8^4 - 3)`` = 0.41,
85 standard errors. (The 1% scale moves the CDF by ``0.01 max(x phi(x))`` = 0.0024, ``D sqrt(n)`` =
2.5: at the edge of Kolmogorov-Smirnov's threshold, so only the moments check is held to it.) The dependence checks correlate ``2^17`` or more
pairs: a repeated lane (correlation 1 on an eighth of the rows) or a dependent square (correlation
0.5 or more) lies hundreds of standard errors out.
"""

import hashlib

import numba
import numpy as np
import pytest
from scipy import stats

import mtrl_fast
from mtrl_fast._kernels._random import (
    minus_two_log_uniform,
    minus_two_log_uniform32,
    philox,
    unit_circle,
    unit_circle32,
)
from mtrl_fast.paper import sampling
from mtrl_fast.paper.tasks import make_task_family

T, N, D = 8, 512, 64
LAW_N = 2048  # rows per task of the law checks' draws: T * LAW_N * D = 2^20 values (see the docstring)
SIGMAS = 6.0  # a check rejects beyond this many standard errors: a false alarm is ~1e-9 per statistic
DTYPES = [np.float32, np.float64]

GOOD = "good"
# Structural flaws: the sampler's pieces put together wrongly (the flaw's number in _broken_draw).
IGNORES_TASK, REPEATED_LANE, DEPENDENT_PAIR, NO_QUADRANT = (
    "key ignores the task",
    "a lane repeats",
    "dependent Box-Muller pair",
    "angle without its quadrant",
)
STRUCTURAL = {IGNORES_TASK: 1, REPEATED_LANE: 2, DEPENDENT_PAIR: 3, NO_QUADRANT: 4}
# Law flaws: the real draw's values changed.
SCALED, SHIFTED, ROUNDED, STUDENT_T, UNIFORM, OUTLIERS = (
    "1% scale",
    "mean shifted by 0.01",
    "rounded to a grid of 0.2",
    "Student-t tail",
    "uniform",
    "rare outliers",
)


def _family(d=D, r=3, tasks=T, **options):
    return make_task_family(d, r, tasks, np.random.default_rng([d, r, tasks]), **options)


def _draw(key=(11, 12, 0, 0), dtype=np.float32, tasks=T, n=N, d=D, **options):
    family = _family(d=d, tasks=tasks, **options)
    return family.sample_tasks(0, tasks, n, key, "per-task", dtype)


@numba.njit
def _broken_draw(keys, n, d, flaw, double):
    """A generator with one flaw (1: key ignores the task, 2: a repeated lane, 3: a dependent second
    Box-Muller output, 4: the angle's quadrant bits dropped), else as the sampler draws: the float64
    path when ``double``, the float32 path otherwise."""
    out = np.empty((keys.shape[0], n, d))
    zero = np.uint64(0)
    low30 = np.uint64(0x3FFFFFFF)
    for t in range(keys.shape[0]):
        k0, k1 = (keys[0, 0], keys[0, 1]) if flaw == 1 else (keys[t, 0], keys[t, 1])
        for i in range(n):
            row = (i // 2) * 2 if flaw == 2 and i % 8 == 3 else i  # lane 3 of 8 repeats lane 2
            if double:
                for block in range(d // 2):
                    w0, w1, w2, _ = philox(np.uint64(block), np.uint64(row), zero, zero, k0, k1)
                    radius = np.sqrt(minus_two_log_uniform((w0 << np.uint64(20)) | (w1 >> np.uint64(12)), 52))
                    c, s = unit_circle(w2 & low30 if flaw == 4 else w2)
                    out[t, i, 2 * block] = radius * c
                    out[t, i, 2 * block + 1] = radius * 2.0 * s * c if flaw == 3 else radius * s
            else:
                for block in range(d // 4):
                    w0, w1, w2, w3 = philox(np.uint64(block), np.uint64(row), zero, zero, k0, k1)
                    for half, (wa, wb) in enumerate(((w0, w1), (w2, w3))):
                        radius = np.sqrt(minus_two_log_uniform32(wa))
                        c, s = unit_circle32(wb & low30 if flaw == 4 else wb)
                        second = radius * 2.0 * s * c if flaw == 3 else radius * s
                        out[t, i, 4 * block + 2 * half] = radius * c
                        out[t, i, 4 * block + 2 * half + 1] = second
    return out


def _generate(kind, dtype=np.float32, key=(11, 12, 0, 0), n=N):
    """``X (T, n, D)`` in float64 from the real sampler in ``dtype`` (``good``) or a broken twin."""
    if kind in STRUCTURAL:
        keys, _ = sampling.task_keys(key, 0, T)
        return _broken_draw(keys, n, D, STRUCTURAL[kind], dtype == np.float64)
    X = _draw(key, dtype=dtype, n=n)[0].astype(np.float64)
    rng = np.random.default_rng(list(key))
    return {
        GOOD: lambda: X,
        SCALED: lambda: 1.01 * X,
        SHIFTED: lambda: X + 0.01,
        ROUNDED: lambda: np.round(X / 0.2) * 0.2,
        STUDENT_T: lambda: rng.standard_t(5, X.shape) * np.sqrt(3 / 5),
        UNIFORM: lambda: rng.uniform(-np.sqrt(3), np.sqrt(3), X.shape),
        OUTLIERS: lambda: np.where(rng.random(X.shape) < 1e-4, 8.0 * np.sign(X), X),
    }[kind]()


# --- the checks: each returns whether the sample passes ------------------------------------------


def moments_ok(x):
    """Mean, variance, skewness and kurtosis, each within ``SIGMAS`` standard errors of N(0, 1)'s."""
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
            a = X[:, :, phase : D - lag : 4]
            b = X[:, :, phase + lag :: 4][:, :, : a.shape[2]]
            if not (_corr_ok(a, b) and _corr_ok(a**2, b**2)):
                return False
    return True


#: The law checks see one draw of 2^20 values; the dependence checks the layout of tasks, rows, columns.
LAW_CHECKS = {"moments": moments_ok, "Kolmogorov-Smirnov": normal_ks_ok}
DEPENDENCE_CHECKS = {"tasks": tasks_independent_ok, "rows": rows_independent_ok, "serial": serial_ok}
CHECKS = {**LAW_CHECKS, **DEPENDENCE_CHECKS}
#: Which checks must reject which flaw, and the flaws each check is the only one to catch (the other
#: checks pass them: no check leans on another to have power).
CATCHES = {
    IGNORES_TASK: ["tasks"],
    REPEATED_LANE: ["rows"],
    DEPENDENT_PAIR: ["serial"],
    NO_QUADRANT: ["moments", "Kolmogorov-Smirnov"],
    SCALED: ["moments"],
    SHIFTED: ["moments", "Kolmogorov-Smirnov"],
    ROUNDED: ["Kolmogorov-Smirnov"],
    STUDENT_T: ["moments", "Kolmogorov-Smirnov"],
    UNIFORM: ["moments", "Kolmogorov-Smirnov"],
    OUTLIERS: ["moments"],
}
ONLY = {
    "tasks": IGNORES_TASK,
    "rows": REPEATED_LANE,
    "serial": DEPENDENT_PAIR,
    "moments": OUTLIERS,
    "Kolmogorov-Smirnov": ROUNDED,
}


def _sample(kind, check, dtype):
    return _generate(kind, dtype, n=LAW_N if check in LAW_CHECKS else N)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("check", CHECKS)
def test_the_sampler_passes_every_check(check, dtype):
    assert CHECKS[check](_sample(GOOD, check, dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("flaw, check", [(flaw, check) for flaw, checks in CATCHES.items() for check in checks])
def test_each_check_rejects_its_broken_generators(flaw, check, dtype):
    assert not CHECKS[check](_sample(flaw, check, dtype)), f"the {check} check let '{flaw}' through"


def test_every_check_has_broken_generators():
    assert {check for checks in CATCHES.values() for check in checks} == set(CHECKS) == set(ONLY)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("check", ONLY)
def test_each_checks_own_flaw_passes_every_other_check(check, dtype):
    """The flaw a check is paired with alone: the other checks let it through, so the check's power
    is its own (the 1% scale passes Kolmogorov-Smirnov, the rounding the moments, the dependent
    pair keeps normal marginals)."""
    flaw = ONLY[check]
    for other in CHECKS:
        if other != check:
            assert CHECKS[other](_sample(flaw, other, dtype)), f"{other} caught '{flaw}', {check}'s own flaw"


def test_keys_rounds_and_phases_give_independent_draws():
    base = _generate(GOOD, key=(11, 12, 0, 0))
    for key in ((11, 12, 1, 0), (11, 12, 0, 1), (11, 13, 0, 0), (12, 12, 0, 0)):
        assert _corr_ok(base, _generate(GOOD, key=key)), key


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
