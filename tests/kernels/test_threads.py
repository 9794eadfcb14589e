"""Thread control, safety under concurrent calls, and bitwise-repeatable results."""

import threading

import numba
import numpy as np
import pytest

import mtrl_fast
from helpers import make_problem, run_python
from mtrl_fast import _runtime
from mtrl_fast._kernels import _jit, _passes


def _step(problem, loss="logistic"):
    value, grads = mtrl_fast.loss_and_grad(*problem, loss=loss)
    return value, grads.W, grads.b, grads.A


def _problems():
    return [
        make_problem(layout, dtype, n=300, d=12, m=20, T=T, seed=seed)
        for seed, (layout, dtype, T) in enumerate(
            [
                ("shared", np.float64, 7),
                ("per-task", np.float32, 9),
                ("per-task", np.float64, 1),
                ("shared", np.float32, 40),
            ]
        )
    ]


def _assert_identical(a, b):
    assert a[0] == b[0]
    for x, y in zip(a[1:], b[1:]):
        np.testing.assert_array_equal(x, y)


def test_repeated_calls_are_bitwise_identical():
    for problem in _problems():
        first = _step(problem)
        for _ in range(5):
            _assert_identical(_step(problem), first)


def test_concurrent_calls_give_the_serial_results():
    problems = _problems()
    serial = [_step(p) for p in problems]
    errors = []
    barrier = threading.Barrier(len(problems))

    def worker(i):
        try:
            barrier.wait()
            for _ in range(15):
                _assert_identical(_step(problems[i]), serial[i])
        except BaseException as error:  # reported in the main thread
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(problems))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


CONCURRENT_SCRIPT = """
    import threading, numpy as np, mtrl_fast
    from helpers import make_problem, run_python
    mtrl_fast._runtime.PARALLEL_MIN_WORK = 0  # every pass on its parallel twin, small as it is
    problem = make_problem("shared", np.float64, n=400, d=10, m=30, T=5)
    expected = mtrl_fast.loss_and_grad(*problem)[1].W
    bad = []
    def work():
        for _ in range(40):
            if not np.array_equal(mtrl_fast.loss_and_grad(*problem)[1].W, expected):
                bad.append(1)
    threads = [threading.Thread(target=work) for _ in range(4)]
    [t.start() for t in threads]; [t.join() for t in threads]
    import numba
    print(numba.threading_layer(), len(bad))
"""


def test_unsafe_workqueue_layer_is_serialised():
    """Numba's workqueue layer aborts on concurrent parallel calls; the package serialises them."""
    result = run_python(CONCURRENT_SCRIPT, NUMBA_THREADING_LAYER="workqueue")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["workqueue", "0"]


def test_default_layer_is_thread_safe_and_openmp_workers_sleep():
    """By default a thread-safe layer runs, and OpenMP workers do not spin against BLAS."""
    result = run_python("""
        import os, mtrl_fast, numpy as np
        mtrl_fast._runtime.PARALLEL_MIN_WORK = 0  # a parallel pass starts the layer
        mtrl_fast.forward(np.ones((2, 2)), np.ones((2, 2)), None, np.ones((1, 2)))
        import numba
        print(numba.threading_layer(), os.environ["OMP_WAIT_POLICY"])
    """)
    assert result.returncode == 0, result.stderr
    layer, policy = result.stdout.split()
    assert layer in ("omp", "tbb")
    assert policy == "PASSIVE"


def test_user_wait_policy_is_respected():
    result = run_python("import os, mtrl_fast; print(os.environ['OMP_WAIT_POLICY'])", OMP_WAIT_POLICY="ACTIVE")
    assert result.stdout.strip() == "ACTIVE"


def test_num_threads_context_restores():
    before = mtrl_fast.get_num_threads()
    with mtrl_fast.num_threads(1) as k:
        assert k == 1
        assert mtrl_fast.get_num_threads() == 1
        problem = make_problem("per-task", np.float64, n=200, d=5, m=7, T=3)
        one_thread = _step(problem)
    assert mtrl_fast.get_num_threads() == before
    value, *_ = _step(problem)
    assert value == pytest.approx(one_thread[0], rel=1e-12)


def test_set_num_threads():
    before = mtrl_fast.get_num_threads()
    try:
        mtrl_fast.set_num_threads(1)
        assert mtrl_fast.get_num_threads() == 1
    finally:
        mtrl_fast.set_num_threads(before)
    assert mtrl_fast.get_num_threads() == before


@pytest.mark.parametrize(
    "k, error",
    [
        (0, ValueError),
        (numba.config.NUMBA_NUM_THREADS + 1, ValueError),
        (1.5, TypeError),
        ("2", TypeError),
        (True, TypeError),
    ],
)
def test_bad_thread_counts(k, error):
    with pytest.raises(error, match="k must"):
        mtrl_fast.set_num_threads(k)
    with pytest.raises(error, match="k must"):
        with mtrl_fast.num_threads(k):
            pass


def test_show_config_reports_what_a_bug_report_needs(capsys):
    info = mtrl_fast.show_config()
    printed = capsys.readouterr().out
    for key in ("numba", "numpy", "threading_layer", "num_threads", "blas", "OMP_WAIT_POLICY", "cpu"):
        assert key in info and key in printed
    assert info["threading_layer"] in ("omp", "tbb", "workqueue")
    assert info["blas"], "no BLAS library found"


def _twins_run(monkeypatch):
    """The twins each call of the passes runs: ``"parallel"`` or ``"serial"``."""
    ran = []
    for p in [obj for obj in vars(_passes).values() if isinstance(obj, _jit.Pass)]:
        for twin, attribute in (("parallel", "kernel"), ("serial", "serial_kernel")):
            kernel = getattr(p, attribute)
            monkeypatch.setattr(p, attribute, lambda *args, _k=kernel, _t=twin: ran.append(_t) or _k(*args))
    return ran


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="the parallel twin needs two threads")
def test_the_serial_twin_gives_the_parallel_twins_bits(monkeypatch):
    """Below PARALLEL_MIN_WORK the passes run their serial twin on the calling thread; chunking does
    not depend on the thread count, so the results are bitwise those of the parallel twin."""
    ran = _twins_run(monkeypatch)
    problems = _problems()
    with mtrl_fast.num_threads(2):
        parallel = [_step(p) for p in problems]
    assert set(ran) == {"parallel"}
    ran.clear()
    monkeypatch.setattr(_runtime, "PARALLEL_MIN_WORK", 1 << 40)
    with mtrl_fast.num_threads(2):
        for problem, expected in zip(problems, parallel):
            _assert_identical(_step(problem), expected)
    assert set(ran) == {"serial"}


def test_one_thread_runs_the_serial_twin_whatever_the_work(monkeypatch):
    ran = _twins_run(monkeypatch)
    with mtrl_fast.num_threads(1):
        _step(_problems()[0])
    assert ran and set(ran) == {"serial"}


def test_wait_policy_can_be_left_to_libgomp():
    result = run_python("import os, mtrl_fast; print(os.environ.get('OMP_WAIT_POLICY'))", MTRL_FAST_SET_WAIT_POLICY="0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "None"
