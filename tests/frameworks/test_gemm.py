"""Where the products run: NumPy's BLAS, PyTorch's matmul, Intel MKL or "auto", chosen per process,
per block, and by mtrl_fast.torch's ops; the same answers, bitwise repeatable for one provider."""

import json
import os
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mtrl_fast
from helpers import assert_grads_close, make_problem, run_python
from mtrl_fast import _runtime, gemms, ops, reference

INSTALLED = gemms.available()


def installed(name):
    return pytest.param(name, marks=pytest.mark.skipif(name not in INSTALLED, reason=f"{name} is not installed"))


PROVIDERS = [installed(name) for name in gemms.PROVIDERS]


#: The product classes at a tenth of their size or less, for the tests of "auto"'s choice and cache.
SMALL_CLASSES = tuple((c[0], min(c[1], 64), min(c[2], 96), min(c[3], 32), c[4], c[5]) for c in gemms.PRODUCT_CLASSES)


@pytest.fixture
def timing_cache(tmp_path, monkeypatch):
    """An empty cache folder for "auto", no timings in this process yet, and quick timings: small
    products of the same classes, timed in this process (one test times them as users get them,
    each provider in a process of its own)."""
    monkeypatch.setenv("MTRL_FAST_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(gemms.auto, "_auto", None)
    monkeypatch.setattr(gemms.auto, "PRODUCT_CLASSES", SMALL_CLASSES)
    monkeypatch.setattr(gemms.auto, "TIMING_REPEATS", 2)
    monkeypatch.setattr(gemms.auto, "ISOLATED", False)
    gemms.auto._static_key.cache_clear()  # the classes are part of the key
    yield tmp_path
    gemms.auto._static_key.cache_clear()


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("layout", ["shared", "per-task"])
def test_each_provider_gives_the_reference_and_repeats_bitwise(provider, layout, dtype):
    problem = make_problem(layout, dtype, n=70, d=9, m=12, T=6)
    with mtrl_fast.gemm(provider), ops.record_products() as products:
        value, grads = mtrl_fast.loss_and_grad(*problem, "logistic", gram=True)
        again = mtrl_fast.loss_and_grad(*problem, "logistic", gram=True)
        F = mtrl_fast.forward(*problem[:1], *problem[2:])
        assert mtrl_fast.get_gemm() == provider
    assert products
    want_value, want = reference.loss_and_grad(*problem, "logistic")
    np.testing.assert_allclose(value, want_value, rtol=1e-5)
    assert_grads_close(grads, want, problem, "logistic", dtype)
    np.testing.assert_allclose(F, reference.forward(*problem[:1], *problem[2:]), rtol=1e-5, atol=1e-5)
    assert value == again[0]
    for got, repeated in zip((*grads, grads.gram), (*again[1], again[1].gram)):
        assert (got is None and repeated is None) or np.array_equal(got, repeated)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("n, d, m", [(1, 1, 1), (1, 5, 3), (6, 1, 4), (6, 5, 1)])
def test_each_provider_at_the_edge_sizes(provider, n, d, m, layout, dtype):
    problem = make_problem(layout, dtype, n=n, d=d, m=m, T=1)
    with mtrl_fast.gemm(provider):
        value, grads = mtrl_fast.loss_and_grad(*problem, "logistic")
    want_value, want = reference.loss_and_grad(*problem, "logistic")
    np.testing.assert_allclose(value, want_value, rtol=1e-5)
    assert_grads_close(grads, want, problem, "logistic", dtype)


def _strided(draw, rows, cols, dtype):
    """A (rows, cols) array in one of the memory layouts a step's products see."""
    kind = draw(st.sampled_from(["c", "f", "rows of a wider array", "every other row", "a transposed slice"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if kind == "c":
        return rng.standard_normal((rows, cols)).astype(dtype)
    if kind == "f":
        return np.asfortranarray(rng.standard_normal((rows, cols)).astype(dtype))
    if kind == "rows of a wider array":
        return rng.standard_normal((rows, cols + 3)).astype(dtype)[:, 1 : cols + 1]
    if kind == "every other row":
        return rng.standard_normal((2 * rows, cols)).astype(dtype)[::2]
    return rng.standard_normal((cols + 2, rows)).astype(dtype)[1 : cols + 1].T


@pytest.mark.skipif("mkl" not in INSTALLED, reason="mkl is not installed")
@given(data=st.data(), M=st.integers(1, 9), K=st.integers(1, 9), N=st.integers(1, 9), f32=st.booleans())
def test_mkl_reads_every_memory_layout_and_writes_any_out(data, M, K, N, f32):
    dtype = np.float32 if f32 else np.float64
    left, right = _strided(data.draw, M, K, dtype), _strided(data.draw, K, N, dtype)
    multiply = gemms.matmul("mkl")
    want = left.astype(np.float64) @ right.astype(np.float64)
    np.testing.assert_allclose(multiply(left, right), want, rtol=1e-5, atol=1e-5)
    out = np.empty((M, N), dtype=dtype, order=data.draw(st.sampled_from("CF")))
    assert multiply(left, right, out=out) is out
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif("mkl" not in INSTALLED, reason="mkl is not installed")
def test_mkl_hands_what_cblas_cannot_run_to_numpy():
    multiply = gemms.matmul("mkl")
    ints = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(multiply(ints, ints.T), ints @ ints.T)
    mixed = np.ones((2, 3), np.float32), np.ones((3, 2), np.float64)
    np.testing.assert_array_equal(multiply(*mixed), mixed[0] @ mixed[1])
    empty = np.ones((0, 3)), np.ones((3, 2))
    assert multiply(*empty).shape == (0, 2)
    with pytest.raises(ValueError):
        multiply(np.ones((2, 3)), np.ones((2, 3)))


def test_read_only_inputs_run_on_the_torch_gemm_without_a_warning(recwarn):
    pytest.importorskip("torch")
    X, Y, W, b, A = make_problem("shared", np.float32, n=20, d=5, m=4, T=3)
    for array in (X, W, A):
        array.flags.writeable = False
    with mtrl_fast.gemm("torch"):
        mtrl_fast.loss_and_grad(X, Y, W, b, A)
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


@pytest.mark.parametrize("spinning", [False, True], ids=["passive workers", "spinning workers"])
def test_the_torch_ops_run_on_the_fastest_gemm_unless_a_choice_was_made(monkeypatch, timing_cache, spinning):
    """Before: always on PyTorch's matmul, twice as slow as NumPy's OpenBLAS on an AMD EPYC."""
    torch = pytest.importorskip("torch")
    import mtrl_fast.torch as mt

    monkeypatch.setattr(gemms.setting, "_default", None)
    monkeypatch.setattr(_runtime, "openmp_workers_spin", lambda: spinning)
    seen = []
    real = ops._multiplier
    monkeypatch.setattr(
        ops, "_multiplier", lambda dtype: seen.append(gemms.resolve(gemms.get_gemm(), dtype)) or real(dtype)
    )
    X, Y, W, b, A = (torch.from_numpy(a) for a in make_problem("shared", np.float32, n=20, d=5, m=4, T=3))
    W.requires_grad_(True)

    def products_ran_on():
        seen.clear()
        mt.loss(X, Y, W, b, A, "logistic").backward()
        return set(seen)

    # Measured where OpenMP's workers sleep; PyTorch's own pool where they spin (see torch_ops_gemm).
    assert products_ran_on() == {"torch" if spinning else gemms.resolve("auto", np.float32)}
    with mtrl_fast.gemm("numpy"):
        assert products_ran_on() == {"numpy"}
    mtrl_fast.set_gemm("numpy")  # a process-wide choice applies to the ops too
    assert products_ran_on() == {"numpy"}


@pytest.mark.parametrize("torch_first", [False, True], ids=["mtrl_fast first", "torch first"])
def test_the_ops_default_follows_the_import_order(torch_first):
    pytest.importorskip("torch")
    imports = "import torch, mtrl_fast.torch" if torch_first else "import mtrl_fast.torch, torch"
    result = run_python(
        f"import warnings; warnings.simplefilter('ignore')\n{imports}\n"
        "from mtrl_fast import gemms, _runtime\nprint(_runtime.openmp_workers_spin(), gemms.torch_ops_gemm())"
    )
    assert result.stdout.split() == (["True", "torch"] if torch_first else ["False", "auto"]), result.stderr


RENAMED_RUNTIME_FIRST = """
import ctypes, importlib.util, os, tempfile, warnings
warnings.simplefilter("error")  # a warning fails the run
# GNU OpenMP under another file name and soname, as a wheel bundles it (auditwheel's libgomp-<hash>),
# loaded before mtrl_fast: a runtime that no library of PyTorch's or Numba's binds to.
original = os.path.join(os.path.dirname(importlib.util.find_spec("torch").origin), "lib", "libgomp.so.1")
with open(original, "rb") as file:
    data = file.read()
assert data.count(b"libgomp.so.1\\x00") == 1  # the soname, in the dynamic string table
renamed = os.path.join(tempfile.mkdtemp(), "libgomp-1a2b3c4d.so.1")
with open(renamed, "wb") as file:
    file.write(data.replace(b"libgomp.so.1\\x00", b"libvndgomp.1\\x00"))  # same length: no offset moves
ctypes.CDLL(renamed)
import mtrl_fast.torch, torch
from mtrl_fast import gemms, _runtime
assert _runtime.torch_runtime() != os.path.realpath(renamed), _runtime.torch_runtime()
print(_runtime.openmp_workers_spin(), gemms.torch_ops_gemm(), _runtime.wait_policy_warning())
"""


def test_a_renamed_openmp_runtime_loaded_first_neither_switches_the_gemm_nor_warns():
    """Before: the word "libgomp" anywhere in the process's memory map counted as PyTorch's runtime
    loaded first, so a wheel's bundled copy switched the torch ops to PyTorch's GEMM and warned."""
    pytest.importorskip("torch")
    result = run_python(RENAMED_RUNTIME_FIRST)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["False", "auto", "None"], result.stdout


def test_set_gemm_and_bad_names(monkeypatch):
    monkeypatch.setattr(gemms.setting, "_default", None)
    monkeypatch.setattr(_runtime, "openmp_workers_spin", lambda: False)
    assert mtrl_fast.get_gemm() == "numpy" and gemms.torch_ops_gemm() == "auto"
    mtrl_fast.set_gemm(INSTALLED[-1])
    assert mtrl_fast.get_gemm() == INSTALLED[-1]
    with mtrl_fast.gemm("numpy"):
        assert mtrl_fast.get_gemm() == "numpy"
    assert mtrl_fast.get_gemm() == INSTALLED[-1]
    with pytest.raises(ValueError, match="gemm must be one of"):
        mtrl_fast.set_gemm("blis")
    with pytest.raises(ValueError, match="gemm must be one of"), mtrl_fast.gemm("openblas"):
        pass


def test_a_missing_provider_names_its_extra(monkeypatch):
    monkeypatch.setattr(gemms.providers, "_installed", lambda distribution: distribution == "numpy")
    for name, extra in (("mkl", "mkl"), ("torch", "torch")):
        with pytest.raises(ValueError, match=rf"pip install 'mtrl_fast\[{extra}\]'"):
            mtrl_fast.set_gemm(name)
    assert gemms.available() == ["numpy"]


def test_the_environment_chooses_the_gemm_at_import():
    chosen = run_python("import mtrl_fast; print(mtrl_fast.get_gemm())", MTRL_FAST_GEMM=INSTALLED[-1])
    assert chosen.returncode == 0 and chosen.stdout.strip() == INSTALLED[-1], chosen.stderr
    bad = run_python("import mtrl_fast", MTRL_FAST_GEMM="blis")
    assert bad.returncode != 0 and "MTRL_FAST_GEMM: gemm must be one of ('numpy', 'torch', 'mkl', 'auto')" in bad.stderr


# --- "auto" ---------------------------------------------------------------------------------------


def _slow(seconds):
    def multiply(left, right, out=None):
        result = np.matmul(left, right, out=out)
        time.sleep(seconds)
        return result

    return multiply


def _fake_providers(monkeypatch, **loads):
    """Providers whose speed the test decides, on small product classes."""
    providers = {name: gemms.Provider(name, name, "numpy", None, load) for name, load in loads.items()}
    monkeypatch.setattr(gemms.providers, "PROVIDERS", providers)
    monkeypatch.setattr(gemms.providers, "_loaded", {})
    monkeypatch.setattr(
        gemms.auto, "PRODUCT_CLASSES", (("small", 8, 8, 8, False, True), ("tall", 64, 8, 8, True, False))
    )
    monkeypatch.setattr(gemms.auto, "TIMING_REPEATS", 3)
    monkeypatch.setattr(gemms.auto, "ISOLATED", False)  # these providers exist in this process only
    gemms.auto._static_key.cache_clear()  # and again after the test (fresh_static_key)
    return providers


@pytest.fixture
def fresh_static_key():
    yield
    gemms.auto._static_key.cache_clear()


def test_auto_picks_the_fastest_and_keeps_numpy_within_the_noise(timing_cache, monkeypatch, fresh_static_key):
    _fake_providers(monkeypatch, numpy=lambda: _slow(0.002), quick=lambda: np.matmul)
    timings = gemms.auto_timings()
    assert timings["choice"] == {"float32": "quick", "float64": "quick"}
    assert set(timings["rates"]["float32"]) == {"numpy", "quick"}
    assert timings["rates"]["float32"]["quick"]["small"] > timings["rates"]["float32"]["numpy"]["small"]
    assert gemms.resolve("auto", np.dtype(np.float32)) == "quick" and gemms.resolve("numpy", np.float32) == "numpy"

    monkeypatch.setattr(gemms.auto, "_auto", None)
    monkeypatch.setattr(gemms.auto, "MIN_GAIN", 1e9)  # nothing is that much faster: NumPy's BLAS stays
    assert gemms.auto_timings(retime=True)["choice"] == {"float32": "numpy", "float64": "numpy"}


def test_auto_keeps_numpy_where_the_faster_provider_loses_at_one_class(timing_cache, monkeypatch, fresh_static_key):
    def slow_on_tall_products(left, right, out=None):
        if left.shape[0] == 64:  # the "tall" class only
            time.sleep(0.008)
        return np.matmul(left, right, out=out)

    # "mixed" is faster in total (numpy pays 5 ms at both classes, 10 ms; mixed 8 ms) but slower at
    # "tall", by 1.6x: far from MAX_CLASS_LOSS however much a loaded machine's sleeps overrun (with
    # 3 ms against 4 ms, an overrun of numpy's sleep let "mixed" through in one CI run).
    _fake_providers(monkeypatch, numpy=lambda: _slow(0.005), mixed=lambda: slow_on_tall_products)
    assert gemms.auto_timings()["choice"] == {"float32": "numpy", "float64": "numpy"}
    assert gemms.auto._choose({"numpy": [1.0, 1.0], "mixed": [0.1, 1.02]}) == "mixed"  # within MAX_CLASS_LOSS
    assert gemms.auto._choose({"numpy": [1.0, 1.0], "mixed": [0.1, 1.1]}) == "numpy"


def test_auto_times_once_and_keeps_the_result_on_disk(timing_cache, capsys):
    assert gemms.auto_timings(measure=False) is None
    timings = gemms.auto_timings()
    assert "timing the GEMM providers" in capsys.readouterr().err
    (path,) = timing_cache.iterdir()
    assert timings["path"] == str(path) and set(timings["choice"].values()) <= set(INSTALLED)
    assert json.loads(path.read_text())["choice"] == timings["choice"]

    # Another process reads it and times nothing; its steps run on the choice.
    code = f"""
        import numpy as np, mtrl_fast
        from mtrl_fast import gemms, ops
        from helpers import make_problem
        gemms.auto.PRODUCT_CLASSES = {SMALL_CLASSES!r}  # as this test's
        mtrl_fast.set_gemm("auto")
        ran = []
        real = gemms.matmul
        gemms.matmul = lambda name: ran.append(name) or real(name)
        mtrl_fast.loss_and_grad(*make_problem("shared", np.float32))
        print(sorted(set(ran)))
    """
    again = run_python(code, MTRL_FAST_CACHE_DIR=str(timing_cache))
    assert again.returncode == 0, again.stderr
    assert "timing" not in again.stderr and again.stdout.strip() == str([timings["choice"]["float32"]])


def test_auto_times_each_provider_in_a_process_of_its_own(timing_cache, monkeypatch):
    monkeypatch.setattr(gemms.auto, "ISOLATED", True)
    timings = gemms.auto_timings()
    assert timings["isolated"] is True
    assert set(timings["rates"]["float32"]) == set(INSTALLED)


def test_a_timing_under_one_wait_policy_is_not_reused_under_another(timing_cache, monkeypatch):
    """Before: the key held the CPU, the versions and the thread count, not the wait policy or the
    import order that the providers' speed depends on."""
    first = gemms.auto_timings()
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.setattr(gemms.auto, "_auto", None)
    assert gemms.auto_timings(measure=False) is None
    monkeypatch.setenv("OMP_WAIT_POLICY", first["key"]["openmp"]["wait_policy"] or "")
    if first["key"]["openmp"]["wait_policy"] is None:
        monkeypatch.delenv("OMP_WAIT_POLICY")
    assert gemms.auto_timings(measure=False)["choice"] == first["choice"]
    monkeypatch.setattr(gemms.auto, "_openmp_key", lambda: {**first["key"]["openmp"], "torch_runtime_spins": True})
    assert gemms.resolve("auto", np.float32) in INSTALLED  # the cheap check saw the change: timed anew
    assert gemms.auto._auto["key"]["openmp"]["torch_runtime_spins"] is True


def test_auto_retimes_a_damaged_file_or_another_machine(timing_cache, capsys):
    first = gemms.auto_timings()
    path = first["path"]
    with open(path, "w") as file:
        file.write("{not json")
    gemms.auto._auto = None
    assert gemms.auto_timings()["key"] == first["key"]
    assert "timing" in capsys.readouterr().err
    record = json.loads(open(path).read())
    record["key"]["cpu"] = "another CPU"
    with open(path, "w") as file:
        json.dump(record, file)
    gemms.auto._auto = None
    assert gemms.auto_timings(measure=False) is None


def test_auto_where_the_cache_cannot_be_written(tmp_path, monkeypatch):
    blocked = tmp_path / "a file, not a folder"
    blocked.write_text("")
    monkeypatch.setenv("MTRL_FAST_CACHE_DIR", str(blocked))
    monkeypatch.setattr(gemms.auto, "_auto", None)
    with pytest.warns(RuntimeWarning, match="cannot keep the GEMM timings"):
        timings = gemms.auto_timings()
    assert timings["path"] is None and gemms.auto_timings() is timings  # kept in this process


def test_auto_times_anew_at_another_thread_count(timing_cache):
    first = gemms.auto_timings()
    with mtrl_fast.num_threads(1):
        assert gemms.auto_timings()["key"]["threads"] == 1
    assert gemms.auto_timings() == first
    assert len(os.listdir(timing_cache)) == 2


@pytest.mark.parametrize("layout", ["shared", "per-task"])
def test_auto_gives_the_reference(timing_cache, layout, dtype):
    problem = make_problem(layout, dtype, n=30, d=7, m=5, T=4)
    with mtrl_fast.gemm("auto"):
        value, grads = mtrl_fast.loss_and_grad(*problem, "squared")
    want_value, want = reference.loss_and_grad(*problem, "squared")
    np.testing.assert_allclose(value, want_value, rtol=1e-5)
    assert_grads_close(grads, want, problem, "squared", dtype)


def test_info_shows_the_providers_the_timings_and_the_choice(timing_cache, capsys):
    from mtrl_fast import cli

    assert cli.main(["info"]) == 0
    shown = capsys.readouterr().out
    assert f"installed: {', '.join(INSTALLED)}" in shown and "not timed on this machine yet" in shown
    assert cli.main(["info", "--time-gemm"]) == 0
    shown = capsys.readouterr().out
    chosen = gemms.auto_timings(measure=False)["choice"]
    assert f"float32: chose {chosen['float32']}" in shown and f"float64: chose {chosen['float64']}" in shown
    for name in INSTALLED:
        assert f"{name:>6}: X W^T " in shown


@pytest.mark.parametrize("provider", PROVIDERS)
def test_each_provider_from_several_python_threads_at_once(provider):
    from concurrent.futures import ThreadPoolExecutor

    problems = [make_problem("per-task", np.float32, n=40, d=16, m=8, T=5, seed=seed) for seed in range(8)]

    def step(problem):
        with mtrl_fast.gemm(provider):  # per thread: each worker thread sets its own
            return mtrl_fast.loss_and_grad(*problem)

    alone = [step(problem) for problem in problems]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(step, problems))
    for (value, grads), (again, regrads) in zip(alone, together):
        assert value == again and all(np.array_equal(g, h) for g, h in zip(grads, regrads))
