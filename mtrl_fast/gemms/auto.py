"""``"auto"``: the GEMM providers timed once per machine on the step's product classes, the result
kept on disk, and each dtype's products run on the fastest (``resolve`` reads it)."""

import functools
import hashlib
import json
import os
import sys
import tempfile
import threading
import time
import warnings
from typing import Any

import numba
import numpy as np
from threadpoolctl import threadpool_info

from .. import _platform, _runtime
from . import providers

#: The step's product classes, as ``(name, M, K, N, left transposed, right transposed)``: at a
#: large step (n = 4096 rows, d = 1024, width m = 256, T = 256 tasks) the inputs' product
#: ``X W^T``, the first layer's gradient ``D^T X``, the outputs ``A H^T`` and the heads' gradient
#: ``R H``; at a small one (n = 1024, d = m = 256) its two largest products, where another BLAS
#: can lose although it wins at the large ones (docs/performance.md has the rates).
PRODUCT_CLASSES = (
    ("X W^T", 4096, 1024, 256, False, True),
    ("D^T X", 256, 4096, 1024, True, False),
    ("A H^T", 256, 256, 4096, False, True),
    ("R H", 256, 4096, 256, False, False),
    ("small X W^T", 1024, 256, 256, False, True),
    ("small D^T X", 256, 1024, 256, True, False),
)
#: Another provider replaces NumPy's BLAS only when its products of a step take at least this
#: much less time (closer rates are within a shared machine's noise) ...
MIN_GAIN = 1.03
#: ... and it is not slower than NumPy's BLAS by more than this at any class: "auto" never makes
#: a step's product slower than the default.
MAX_CLASS_LOSS = 1.03
TIMING_REPEATS = 5
_auto: dict[str, Any] | None = None
_auto_lock = threading.Lock()


def cache_dir() -> str:
    """Where ``"auto"`` keeps its timings: ``MTRL_FAST_CACHE_DIR``, else ``$XDG_CACHE_HOME/mtrl_fast``
    (``~/.cache/mtrl_fast``)."""
    chosen = os.environ.get("MTRL_FAST_CACHE_DIR")
    if chosen:
        return chosen
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mtrl_fast")


def machine_key() -> dict[str, Any]:
    """What the timings depend on: the CPU, each provider's version, the kernels' and BLAS's thread
    counts, and the OpenMP wait policy (the one set, and whether PyTorch's runtime, loaded before
    mtrl_fast, spins regardless). Another key (a new PyTorch, fewer threads, another import order)
    is timed anew."""
    blas = sorted({entry["num_threads"] for entry in threadpool_info() if entry.get("user_api") == "blas"})
    return {**_static_key(), "threads": numba.get_num_threads(), "blas_threads": blas, "openmp": _openmp_key()}


def _openmp_key() -> dict[str, Any]:
    """The wait policy in the environment, and whether PyTorch's runtime spins regardless (PyTorch
    imported before mtrl_fast; one imported later, as the torch provider imports it, does not)."""
    return {
        "wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "torch_runtime_spins": "torch" in sys.modules and _runtime.openmp_workers_spin(),
    }


@functools.cache
def _static_key() -> dict[str, Any]:
    return {
        "cpu": _platform.cpu_name(),
        "cpu_flags": _cpu_flags(),
        "cores": os.cpu_count(),
        "versions": {
            name: _platform.installed_version(providers.PROVIDERS[name].distribution) for name in providers.available()
        },
        "classes": [list(c) for c in PRODUCT_CLASSES],
    }


def _cpu_flags() -> str:
    """A digest of what the CPU can run: VMs often show one model name for several generations."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "")
    except OSError:
        flags = ""
    return hashlib.sha256(flags.encode()).hexdigest()[:16]


def _cache_path(key: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return os.path.join(cache_dir(), f"gemm-auto-{digest}.json")


def auto_timings(*, retime: bool = False, measure: bool = True) -> dict[str, Any] | None:
    """``"auto"``'s timings on this machine, and its choice per dtype: read from the cache, or
    measured now (a few seconds) and stored there.

    Parameters
    ----------
    retime : bool, default False
        Time the providers again even where the cache has this machine's timings.
    measure : bool, default True
        ``False``: only read them; ``None`` where this machine has none yet.

    Returns
    -------
    dict or None
        ``rates[dtype][provider][product class]`` in GFLOP/s, ``choice[dtype]`` (the provider
        whose products of one step took least time, and no class much longer than on NumPy's
        BLAS: see ``MIN_GAIN`` and ``MAX_CLASS_LOSS``), ``key`` (see :func:`machine_key`),
        ``measured`` (when), ``seconds`` (how long the timing took) and ``path`` (the cache
        file, or ``None`` where none could be written).
    """
    global _auto
    with _auto_lock:
        key = machine_key()
        if _auto is not None and _auto["key"] == key and not retime:
            return _auto
        path = _cache_path(key)
        record = None if retime else _read(path, key)
        if record is None:
            if not measure:
                return None
            record = _time_providers(key)
            record["path"] = _write(path, record)
        _auto = record
        return record


def _read(path: str, key: dict[str, Any]) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as file:
            record = json.load(file)
    except (OSError, ValueError):
        return None
    if (
        not isinstance(record, dict)
        or record.get("key") != key
        or set(record.get("choice", ())) != {"float32", "float64"}
    ):
        return None
    if not all(name in providers.available() for name in record["choice"].values()):
        return None
    record["path"] = path
    return record


def _write(path: str, record: dict[str, Any]) -> str | None:
    """Store atomically (a whole file or none, whichever process writes last); ``None`` where the
    folder cannot be written (the choice then lives in this process only)."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=os.path.dirname(path), suffix=".tmp", delete=False) as file:
            json.dump({k: v for k, v in record.items() if k != "path"}, file, indent=1)
        os.replace(file.name, path)
    except OSError as error:
        warnings.warn(
            f"mtrl_fast: cannot keep the GEMM timings in {cache_dir()!r} ({error})", RuntimeWarning, stacklevel=3
        )
        return None
    return path


#: Time each provider in a process of its own, started as this one was (its imports' order, its
#: thread counts, the user's wait policy): timed one after the other in one process, a provider's
#: spinning threads slowed the next (docs/performance.md). ``False`` times them all here, for
#: providers that exist in this process only.
ISOLATED = True

_CHILD = """
import json
{first}
import numba, mtrl_fast
from threadpoolctl import threadpool_limits
from mtrl_fast.gemms import auto
numba.set_num_threads({threads})
with threadpool_limits(limits={blas}, user_api="blas"):
    print(json.dumps(auto.provider_medians({name!r}, {classes!r}, {repeats!r})))
"""


def _time_providers(key: dict[str, Any]) -> dict[str, Any]:
    print("mtrl_fast: timing the GEMM providers for 'auto' (once per machine) ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    names = providers.available()
    medians = {name: _isolated_medians(name, key) if ISOLATED else provider_medians(name) for name in names}
    rates: dict[str, dict[str, dict[str, float]]] = {}
    choice: dict[str, str] = {}
    for dtype in ("float32", "float64"):
        rates[dtype] = {
            name: {c[0]: round(2e-9 * c[1] * c[2] * c[3] / t, 1) for c, t in zip(PRODUCT_CLASSES, medians[name][dtype])}
            for name in names
        }
        choice[dtype] = _choose({name: medians[name][dtype] for name in names})
    return {
        "key": key,
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.perf_counter() - started, 2),
        "isolated": ISOLATED,
        "rates": rates,
        "choice": choice,
    }


def _isolated_medians(name: str, key: dict[str, Any]) -> dict[str, list[float]]:
    """:func:`provider_medians` of ``name`` in a fresh process like this one (see ``ISOLATED``)."""
    import subprocess

    openmp = key["openmp"]
    env = dict(os.environ)
    for variable, users in (
        ("OMP_WAIT_POLICY", _runtime.USER_WAIT_POLICY),
        ("OPENBLAS_THREAD_TIMEOUT", _runtime.USER_BLAS_TIMEOUT),
    ):
        env.pop(variable, None)  # the child's mtrl_fast sets them as this one's did, after its imports
        if users is not None:
            env[variable] = users
    code = _CHILD.format(
        first="import torch" if openmp["torch_runtime_spins"] and _runtime.SETS_WAIT_POLICY else "",
        threads=key["threads"],
        blas=max(key["blas_threads"], default=None),
        name=name,
        classes=tuple(PRODUCT_CLASSES),
        repeats=TIMING_REPEATS,
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"timing the GEMM provider {name!r} failed: {done.stderr.strip()[-2000:]}")
    medians: dict[str, list[float]] = json.loads(done.stdout.strip().splitlines()[-1])
    return medians


def provider_medians(
    name: str, classes: tuple[tuple[Any, ...], ...] | None = None, repeats: int | None = None
) -> dict[str, list[float]]:
    """Median seconds of ``name``'s product of each class (``PRODUCT_CLASSES`` by default), per
    dtype, in this process: one round to warm it up, then ``repeats`` (``TIMING_REPEATS``)."""
    classes = PRODUCT_CLASSES if classes is None else classes
    repeats = TIMING_REPEATS if repeats is None else repeats
    rng = np.random.default_rng(0)
    multiply = providers.matmul(name)
    medians: dict[str, list[float]] = {}
    for dtype in (np.float32, np.float64):
        operands = [_operands(rng, dtype, *shape) for shape in classes]
        seconds: list[list[float]] = [[] for _ in classes]
        for repeat in range(repeats + 1):
            for k, (left, right, out) in enumerate(operands):
                start = time.perf_counter()
                multiply(left, right, out=out)
                if repeat:  # the first round warms the provider up
                    seconds[k].append(time.perf_counter() - start)
        medians[np.dtype(dtype).name] = [float(np.median(times)) for times in seconds]
    return medians


def _choose(medians: dict[str, list[float]]) -> str:
    """The provider whose products of a step take least time (the sum over the classes), where it
    beats NumPy's BLAS by ``MIN_GAIN`` and loses to it by no more than ``MAX_CLASS_LOSS`` at any
    class; else ``"numpy"``."""
    default = medians["numpy"]
    eligible = [name for name, times in medians.items() if all(t <= MAX_CLASS_LOSS * d for t, d in zip(times, default))]
    fastest = min(eligible, key=lambda name: sum(medians[name]))
    return fastest if sum(default) >= MIN_GAIN * sum(medians[fastest]) else "numpy"


def _operands(
    rng: np.random.Generator, dtype: type, name: str, M: int, K: int, N: int, left_t: bool, right_t: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    left: np.ndarray = rng.standard_normal((K, M) if left_t else (M, K)).astype(dtype)
    right: np.ndarray = rng.standard_normal((N, K) if right_t else (K, N)).astype(dtype)
    return (left.T if left_t else left), (right.T if right_t else right), np.empty((M, N), dtype=dtype)
