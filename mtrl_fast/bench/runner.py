"""Side-by-side benchmarks of one multi-task step: ours against NumPy, PyTorch and JAX.

Each backend runs in a process of its own (two threading runtimes in one process distort each
other), on the same seeded inputs. Before any timing every backend's result is checked against
the NumPy reference (or, where the reference's task-by-task loop would take too long, against
the NumPy peer, which the test suite checks against the reference). Rounds alternate between
the backends (``timing``); the table reports the median over rounds. The step's own matrix
products (``workload.step_products``) are timed in the same rounds on every installed GEMM
provider (``mtrl_fast.gemms``): a step's time over those on the provider it ran on says how much
it spends beyond BLAS, and every backend's time over those on the fastest provider says how far
it is from the machine's limit.
"""

import gc
import os
import time
from contextlib import contextmanager
from dataclasses import asdict
from multiprocessing import get_context

import numpy as np

from .._platform import BLAS_PINS
from .._progress import Progress
from .._runtime import USER_BLAS_TIMEOUT, USER_WAIT_POLICY
from .peers import OURS, registry
from .timing import SETTLE_S, burst_calls, rotated, time_burst
from .workload import step_products

# --- the worker process -----------------------------------------------------------------------


def _rss_bytes(field):
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak_rss():
    """Make VmHWM restart from the current resident size (Linux: clear_refs 5)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")
        return True
    except OSError:
        return False


def _worker(conn, name, threads):
    """Serve one backend: set up a point, check its result, time rounds, measure peak memory."""
    from .. import gemms, set_num_threads
    from .peers import get

    backend = get(name)
    backend.set_threads(threads)  # first: JAX sizes its thread pool when it starts
    set_num_threads(threads)  # our kernels and the BLAS every backend's NumPy side uses
    state = {}
    while True:
        command, payload = conn.recv()
        try:
            if command == "stop":
                conn.send(("ok", None))
                return
            if command == "setup":
                point, loss, for_memory, workload = payload
                state.clear()
                args = point.inputs()
                step = (backend.prepare_round if workload == "round" else backend.prepare)(*args, loss)
                start = time.perf_counter()
                step.run()  # compiles, traces, allocates: reported apart
                first_call_s = time.perf_counter() - start
                step.run()
                value, grads = step.result()
                state.update(point=point, step=step, args=args, calls={"step": burst_calls(step.run)})
                if name == OURS and not for_memory and workload == "step":
                    for provider in gemms.available():
                        state[provider] = step_products(args, loss, provider)[0]
                        state["calls"][provider] = burst_calls(state[provider])
                conn.send(("ok", (value, tuple(None if g is None else np.asarray(g) for g in grads), first_call_s)))
            elif command == "time":
                run = state[payload] if payload else state["step"].run
                conn.send(("ok", time_burst(run, state["calls"][payload or "step"])))
            elif command == "gemms":  # the installed providers, and the one our step runs on
                conn.send(("ok", (gemms.available(), gemms.resolve(gemms.get_gemm(), np.dtype(payload)))))
            elif command == "peakmem":
                gc.collect()
                before = _rss_bytes("VmRSS")
                if not _reset_peak_rss():
                    conn.send(("ok", None))
                    continue
                state["step"].run()
                inputs = sum(a.nbytes for a in state["args"] if a is not None)
                conn.send(("ok", inputs + _rss_bytes("VmHWM") - before))
            elif command == "version":
                conn.send(("ok", backend.version()))
            elif command == "blas":
                from .._platform import blas_in_use

                conn.send(("ok", "; ".join(blas_in_use())))
        except Exception as error:  # reported to the parent, which marks the backend failed
            conn.send(("error", f"{type(error).__name__}: {error}"))


@contextmanager
def _environment(changes):
    """Set (or, for ``None``, unset) environment variables for the block, then restore them."""
    saved = {key: os.environ.get(key) for key in changes}

    def apply(values):
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    apply(changes)
    try:
        yield
    finally:
        apply(saved)


class _Worker:
    """A backend's process. ``for_memory`` workers allocate every block of 128 KiB or more with
    mmap and return it on free, so resident memory tracks live arrays (glibc otherwise keeps
    freed memory for reuse, which hides a step's allocations from the peak); they only measure
    memory, since that allocator setting slows every step a little."""

    def __init__(self, name, threads, for_memory=False, native_blas=False, target=_worker, gemm=None):
        self.name = name
        context = get_context("spawn")  # fork is unsafe once OpenMP or XLA threads exist
        self.conn, child = context.Pipe()
        self.process = context.Process(target=target, args=(child, name, threads), daemon=True)
        changes = {}
        if for_memory:
            changes["MALLOC_MMAP_THRESHOLD_"] = str(128 * 1024)  # read by glibc when the child starts
        if native_blas:
            # OpenBLAS reads these when it loads in the child: without them it picks this CPU's kernels.
            changes.update({pin: None for pin in BLAS_PINS})
        competitor = registry()[name].role == "peer"
        if gemm is not None and not competitor:
            changes["MTRL_FAST_GEMM"] = gemm
        if competitor:
            # A peer runs with its users' OpenMP setting, not the PASSIVE that importing
            # mtrl_fast sets: PyTorch's own step is faster with libgomp's default spinning.
            changes.update(
                OMP_WAIT_POLICY=USER_WAIT_POLICY,
                OPENBLAS_THREAD_TIMEOUT=USER_BLAS_TIMEOUT,
                MTRL_FAST_SET_WAIT_POLICY="0",
            )
        with _environment(changes):  # the spawned child copies os.environ when it starts
            self.process.start()

    def ask(self, command, payload=None):
        self.conn.send((command, payload))
        status, result = self.conn.recv()
        if status == "error":
            raise RuntimeError(f"{self.name}: {result}")
        return result

    def close(self):
        try:
            self.ask("stop")
        except (OSError, EOFError, RuntimeError):
            pass
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()


# --- checking and timing -----------------------------------------------------------------------

REFERENCE_FLOP_BUDGET = 3e10  # beyond this the reference's per-task loop checks too slowly


def _reference_flops(point):
    return 4 * point.T * point.n * point.d * point.m


def _expected(point, loss, numpy_result, workload="step"):
    """The result every backend must agree with, and what produced it: the reference, or past
    ``REFERENCE_FLOP_BUDGET`` the NumPy peer (run here when it is not among the backends: the
    reference's task-by-task loop would take too long there, and in the shared layout hold every
    task's copy of the inputs)."""
    from .peers import round_step

    if _reference_flops(point) <= REFERENCE_FLOP_BUDGET:
        from ..reference import loss_and_grad

        if workload == "round":
            value, grads = round_step(loss_and_grad, *point.inputs(), loss).run()
        else:
            value, grads = loss_and_grad(*point.inputs(), loss, check_finite=False)
        return (value, tuple(grads)), "reference"
    if numpy_result is None:
        from .peers import get

        numpy_peer = get("numpy")
        step = (numpy_peer.prepare_round if workload == "round" else numpy_peer.prepare)(*point.inputs(), loss)
        step.run()
        value, grads = step.result()
        numpy_result = (value, tuple(None if g is None else np.asarray(g) for g in grads))
    return numpy_result, "numpy"


def _agrees(result, expected, dtype):
    """Whether a backend's result matches, in relative Frobenius norm per gradient.

    In float32 a pre-activation within rounding of zero can land on either side of the ReLU
    kink depending on the BLAS: that sample's whole term moves the gradient. Seen with PyTorch's
    MKL at n = 2048, d = 1024, and with MKL's and PyTorch's GEMM at the per-task (128, 1024, 512,
    16), where 8 of 10^6 pre-activations lie within 1e-5 of zero and the flips move ``grads.W`` by
    1.8e-3 in relative norm (NumPy's BLAS: 3e-7). The norm test accepts a few such flips and still
    catches a wrong formula, which is off by order one.
    """
    tolerance = 5e-3 if dtype == "float32" else 1e-9
    value, grads = result
    want_value, want_grads = expected
    if not abs(value - want_value) <= tolerance * max(1.0, abs(want_value)):
        return False, f"value {value:.6g} != {want_value:.6g}"
    for name, got, want in zip("WbA", grads, want_grads):
        if (got is None) != (want is None):
            return False, f"gradient {name} missing"
        if got is None:
            continue
        scale = float(np.linalg.norm(want)) or 1.0
        error = float(np.linalg.norm(np.asarray(got, dtype=np.float64) - want))
        if not error <= tolerance * scale:
            return False, f"gradient {name} off by {error / scale:.2e} in relative norm"
    return True, ""


def worker_blas(threads=1, native_blas=False):
    """The BLAS (and the kernel family it picked) that a backend's process gets."""
    worker = _Worker(OURS, threads, native_blas=native_blas)
    try:
        return worker.ask("blas")
    finally:
        worker.close()


def run_benchmarks(
    points,
    backend_names,
    threads=None,
    repeat=7,
    loss="logistic",
    progress=True,
    log=print,
    measure_memory=True,
    native_blas=False,
    workload="step",
    gemm=None,
):
    """Time every backend on every point; returns a list of row dicts (one per point and backend).

    Row keys: the point's fields, ``backend``, ``median_s``, ``q25_s``, ``q75_s``, ``gflops``,
    ``gemm`` (the provider our step ran its products on), ``gemm_s`` (those products on it,
    measured alongside), ``over_gemm``, ``provider_s`` (the same products on each installed
    provider), ``limit_gemm`` and ``limit_s`` (the fastest of them: the machine's limit for this
    step), ``over_limit`` (every backend's time over it), ``peak_bytes``, ``peak_over_inputs``,
    ``speedup_over_best_peer`` (ours only), ``first_call_s`` (the backend's first call at the point:
    compilation, tracing, first allocations; never in the medians), ``checked_against``, ``note``.
    ``workload`` is ``"step"`` (one ``loss_and_grad`` step) or ``"round"`` (a training round, ``workload.ROUND``:
    then there are no GEMM times, and ``gflops`` counts the round's FLOPs). ``gemm`` is the GEMM
    setting (``mtrl_fast.set_gemm``) of our step and our framework ops; ``None`` keeps their defaults.
    With ``native_blas`` the backends' processes run without ``OPENBLAS_CORETYPE`` and
    ``OPENBLAS_L2_SIZE``, so OpenBLAS picks this CPU's own kernels. ``peak_bytes`` is the bytes of the step's NumPy inputs and parameters plus what one warm step
    adds to resident memory at its peak (outputs and every temporary); buffers a backend keeps
    between steps (library workspaces, JAX's copies of the inputs) are not counted.
    """
    from .peers import get

    threads = threads or os.cpu_count() or 1
    names = []
    for name in backend_names:
        ok, why = get(name).available()
        if ok:
            names.append(name)
        else:
            log(f"skipping {name}: {why}")
    if OURS not in names:
        names.insert(0, OURS)  # the GEMM times come from our worker
    if gemm == "auto":  # timed here once, at the workers' thread count; they read the cache
        from .. import gemms, num_threads

        with num_threads(threads):
            gemms.auto_timings()
    workers = {name: _Worker(name, threads, native_blas=native_blas, gemm=gemm) for name in names}
    memory_workers = (
        {name: _Worker(name, threads, for_memory=True, native_blas=native_blas, gemm=gemm) for name in names}
        if measure_memory
        else {}
    )
    rows = []
    bar = Progress(len(points), enabled=progress)
    try:
        for point in points:
            rows += _measure_point(point, workers, memory_workers, loss, workload, repeat)
            bar.step(point.label)
    finally:
        for worker in list(workers.values()) + list(memory_workers.values()):
            worker.close()
    return rows


def _checked(workers, point, loss, workload):
    """Set every backend up on ``point`` and check its result: ``(results, first_calls, notes,
    checked_against)``; a backend that failed or disagreed is left out of ``results``, with the
    reason in ``notes``; ``first_calls`` holds each one's first call, in seconds."""
    results, first_calls, notes = {}, {}, {}
    for name, worker in workers.items():
        try:
            value, grads, first_calls[name] = worker.ask("setup", (point, loss, False, workload))
            results[name] = (value, grads)
        except RuntimeError as error:
            notes[name] = str(error)
    expected, checked_against = _expected(point, loss, results.get("numpy"), workload)
    for name in list(results):
        ok, why = _agrees(results[name], expected, point.dtype)
        if not ok:
            notes[name] = f"disagrees with {checked_against}: {why}"
            del results[name]
    return results, first_calls, notes, checked_against


def _alternating(workers, timed, providers, repeat):
    """``repeat`` rounds taking turns between the backends ``timed`` and our step's products on each
    GEMM provider: ``(samples, products)``, seconds by name."""
    samples = {name: [] for name in timed}
    products = {provider: [] for provider in providers}
    for round_index in range(repeat):
        for name in rotated(timed, round_index):
            time.sleep(SETTLE_S)
            samples[name].append(workers[name].ask("time"))
        for provider in rotated(providers, round_index):
            time.sleep(SETTLE_S)
            products[provider].append(workers[OURS].ask("time", provider))
    return samples, products


def _measure_point(point, workers, memory_workers, loss, workload, repeat):
    """The rows of one point: every backend checked, timed in alternating rounds beside the step's
    products, its peak memory measured; ours with its speedup over the best peer."""
    results, first_calls, notes, checked_against = _checked(workers, point, loss, workload)
    providers, own = workers[OURS].ask("gemms", point.dtype)
    if OURS not in results or workload != "step":
        providers = []
    samples, products = _alternating(workers, [name for name in workers if name in results], providers, repeat)
    provider_s = {provider: float(np.median(times)) for provider, times in products.items()}
    gemm_s = provider_s.get(own, float("nan"))
    limit_gemm = min(provider_s, key=provider_s.__getitem__) if provider_s else None
    limit_s = provider_s[limit_gemm] if limit_gemm else float("nan")
    rows = []
    for name in workers:
        row = dict(asdict(point), backend=name, checked_against=checked_against, note=notes.get(name, ""))
        if name in samples:
            median = float(np.median(samples[name]))
            peak = None
            if name in memory_workers:
                memory_workers[name].ask("setup", (point, loss, True, workload))
                peak = memory_workers[name].ask("peakmem")
            row.update(
                median_s=median,
                q25_s=float(np.percentile(samples[name], 25)),
                q75_s=float(np.percentile(samples[name], 75)),
                first_call_s=first_calls[name],
                gemm=own if name == OURS else None,
                gemm_s=gemm_s,
                provider_s=provider_s,
                limit_gemm=limit_gemm,
                limit_s=limit_s,
                gflops=point.workload_flops(workload) / median / 1e9,
                over_gemm=median / gemm_s if name == OURS else float("nan"),
                over_limit=median / limit_s,
                peak_bytes=peak,
                peak_over_inputs=None if peak is None else peak / point.input_bytes(),
            )
        rows.append(row)
    ours = next((r for r in rows if r["backend"] == OURS and "median_s" in r), None)
    peers = [r["median_s"] for r in rows if registry()[r["backend"]].role == "peer" and "median_s" in r]
    if ours and peers:
        ours["speedup_over_best_peer"] = min(peers) / ours["median_s"]
    return rows
