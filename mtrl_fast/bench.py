"""Side-by-side benchmarks of one multi-task step: ours against NumPy, PyTorch and JAX.

Each backend runs in a process of its own (two threading runtimes in one process distort each
other), on the same seeded inputs. Before any timing every backend's result is checked against
the NumPy reference (or, where the reference's task-by-task loop would take too long, against
the NumPy peer, which the test suite checks against the reference). Rounds alternate between
the backends, so that a slow spell of this shared machine hits them all alike; a round times a
burst of back-to-back calls (as a training loop makes them) and keeps its median, and the table
reports the median over rounds. The step's own matrix products are timed in the same rounds: a
step's time over theirs says how much the step spends beyond BLAS.
"""
import csv
import gc
import io
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from ._progress import Progress


def step_inputs(layout, n, d, m, T, dtype="float32", seed=0):
    """Inputs of one ``loss_and_grad`` step with real values from a fixed seed.

    Returns ``(X, Y, W, b, A)``: Gaussian inputs, weights scaled to unit-variance
    pre-activations and outputs, labels -1/+1.
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d) if layout == "shared" else (T, n, d), dtype=np.float64).astype(dtype)
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


@dataclass(frozen=True)
class Point:
    """One benchmark shape."""

    layout: str
    n: int
    d: int
    m: int
    T: int
    dtype: str = "float32"

    @property
    def flops(self):
        """Floating-point operations of one step (DESIGN.md section 1)."""
        if self.layout == "shared":
            return 4 * self.n * self.d * self.m + 6 * self.n * self.m * self.T
        return 4 * self.T * self.n * self.d * self.m + 5 * self.T * self.n * self.m

    @property
    def label(self):
        shape = "n={n} d={d} m={m} T={T}".format(**asdict(self))
        return f"{self.layout} {shape} {self.dtype}"

    def inputs(self):
        return step_inputs(self.layout, self.n, self.d, self.m, self.T, self.dtype)

    def input_bytes(self):
        """Bytes of inputs, parameters and their gradients: what a step cannot do without."""
        size = np.dtype(self.dtype).itemsize
        X = self.n * self.d * (1 if self.layout == "shared" else self.T)
        return size * (X + self.T * self.n + 2 * (self.m * self.d + self.m + self.T * self.m))


# Base shapes: the speed targets' shapes; sweeps vary one size around a base.
TARGET_POINTS = (
    Point("shared", 1024, 256, 256, 64),
    Point("shared", 4096, 1024, 512, 256),
    Point("shared", 2048, 4096, 1024, 1024),
    Point("per-task", 256, 512, 256, 64),
)


def make_grid(layouts=("shared", "per-task"), ds=None, ms=None, Ts=None, dtypes=("float32",), quick=False):
    """Benchmark points: a base shape per layout and sweeps of ``d``, ``m`` and ``T`` around it."""
    if quick:
        bases = {"shared": Point("shared", 1024, 256, 256, 64), "per-task": Point("per-task", 128, 256, 128, 32)}
        ds = ds or (64, 256, 1024)
        ms = ms or (64, 256, 1024)
        Ts = Ts or (1, 64, 256)
    else:
        bases = {"shared": Point("shared", 2048, 1024, 512, 256), "per-task": Point("per-task", 256, 512, 256, 64)}
        ds = ds or (64, 256, 1024, 4096)
        ms = ms or (64, 256, 1024)
        Ts = Ts or (1, 16, 64, 256, 1024)
    points = []
    for layout in layouts:
        base = bases[layout]
        for dtype in dtypes:
            sweep = [base]
            sweep += [Point(layout, base.n, d, base.m, base.T) for d in ds]
            sweep += [Point(layout, base.n, base.d, m, base.T) for m in ms]
            # The per-task input grows with T: keep T n fixed there so the sweep fits in memory.
            sweep += [Point(layout, base.n if layout == "shared" else max(1, base.n * base.T // T), base.d, base.m, T)
                      for T in Ts]
            for p in sweep:
                p = Point(p.layout, p.n, p.d, p.m, p.T, dtype)
                if p not in points:
                    points.append(p)
    return points


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


def own_products(point, args):
    """The step's own matrix products on arrays of the step's shapes, as one callable.

    Outputs go to preallocated arrays, so the time is the products' alone (no allocation or
    first-touch page faults).
    """
    X, Y, W, b, A = args
    if point.layout == "shared":
        H = np.maximum(X @ W.T, 0)
        R = A @ H.T
        D = R.T @ A
        outs = [np.empty_like(H), np.empty_like(R), np.empty_like(A), np.empty_like(D), np.empty_like(W)]
        products = [(X, W.T), (A, H.T), (R, H), (R.T, A), (D.T, X)]
    else:
        X_rows = X.reshape(-1, point.d)
        D = np.maximum(X_rows @ W.T, 0)
        outs = [np.empty_like(D), np.empty_like(W)]
        products = [(X_rows, W.T), (D.T, X_rows)]

    def run():
        for (left, right), out in zip(products, outs):
            np.matmul(left, right, out=out)
    return run


# A round times a burst of back-to-back calls lasting about this long, as a training loop makes
# them, and keeps the burst's median: a lone call after an idle spell also times the wake-up of
# every thread pool it uses (30-100 us each here, more on a busy host), which a loop never pays.
_BURST_S = 0.02
_BURST_MAX_CALLS = 20


def _burst_calls(run):
    """Calls per burst for a callable: one for slow calls, enough to last ``_BURST_S`` for fast ones."""
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    return max(1, min(_BURST_MAX_CALLS, int(_BURST_S / max(seconds, 1e-9))))


def _time_burst(run, calls):
    """Median seconds of ``calls`` back-to-back calls, after one untimed call when ``calls > 1``."""
    if calls > 1:
        run()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _worker(conn, name, threads):
    """Serve one backend: set up a point, check its result, time rounds, measure peak memory."""
    from . import set_num_threads
    from .backends import get

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
                point, loss, for_memory = payload
                state.clear()
                args = point.inputs()
                step = backend.prepare(*args, loss)
                step.run()
                step.run()
                value, grads = step.result()
                state.update(point=point, step=step, args=args, calls={"step": _burst_calls(step.run)})
                if name == "numba" and not for_memory:
                    state["gemm"] = own_products(point, args)
                    state["calls"]["gemm"] = _burst_calls(state["gemm"])
                conn.send(("ok", (value, tuple(None if g is None else np.asarray(g) for g in grads))))
            elif command == "time":
                run = state["gemm"] if payload == "gemm" else state["step"].run
                conn.send(("ok", _time_burst(run, state["calls"][payload or "step"])))
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
        except Exception as error:  # reported to the parent, which marks the backend failed
            conn.send(("error", f"{type(error).__name__}: {error}"))


class _Worker:
    """A backend's process. ``for_memory`` workers allocate every block of 128 KiB or more with
    mmap and return it on free, so resident memory tracks live arrays (glibc otherwise keeps
    freed memory for reuse, which hides a step's allocations from the peak); they only measure
    memory, since that allocator setting slows every step a little."""

    def __init__(self, name, threads, for_memory=False):
        self.name = name
        context = get_context("spawn")  # fork is unsafe once OpenMP or XLA threads exist
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker, args=(child, name, threads), daemon=True)
        saved = os.environ.get("MALLOC_MMAP_THRESHOLD_")
        if for_memory:
            os.environ["MALLOC_MMAP_THRESHOLD_"] = str(128 * 1024)  # read by glibc when the child starts
        try:
            self.process.start()
        finally:
            if for_memory:
                if saved is None:
                    del os.environ["MALLOC_MMAP_THRESHOLD_"]
                else:
                    os.environ["MALLOC_MMAP_THRESHOLD_"] = saved

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

# Pause before each timed burst, so that the thread pools of the backend timed just before are
# asleep again: OpenMP and Eigen workers spin for a while after their last task, and OpenBLAS's
# for 2^28 cycles (measured 0.11 s here), taking a core from whatever runs next.
_SETTLE_S = 0.15

REFERENCE_FLOP_BUDGET = 3e10  # beyond this the reference's per-task loop checks too slowly


def _reference_flops(point):
    return 4 * point.T * point.n * point.d * point.m


def _expected(point, loss, numpy_result):
    """The result every backend must agree with, and what produced it."""
    if _reference_flops(point) <= REFERENCE_FLOP_BUDGET or numpy_result is None:
        from .reference import loss_and_grad

        value, grads = loss_and_grad(*point.inputs(), loss, check_finite=False)
        return (value, tuple(grads)), "reference"
    return numpy_result, "numpy"


def _agrees(result, expected, dtype):
    """Whether a backend's result matches, in relative Frobenius norm per gradient.

    In float32 a pre-activation within rounding of zero can land on either side of the ReLU
    kink depending on the BLAS (seen with PyTorch's MKL at n = 2048, d = 1024): that sample's
    whole term moves one entry of a gradient by ~1e-2 of the largest entry, but the gradient as
    a whole by far less. The norm test accepts such flips and still catches a wrong formula.
    """
    tolerance = 1e-3 if dtype == "float32" else 1e-9
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


def run_benchmarks(points, backend_names, threads=None, repeat=7, loss="logistic", progress=True, log=print,
                   measure_memory=True):
    """Time every backend on every point; returns a list of row dicts (one per point and backend).

    Row keys: the point's fields, ``backend``, ``median_s``, ``q25_s``, ``q75_s``, ``gflops``,
    ``gemm_s`` (the step's own products, measured alongside), ``over_gemm``, ``peak_bytes``,
    ``peak_over_inputs``, ``speedup_over_best_peer`` (ours only), ``checked_against``, ``note``.
    ``peak_bytes`` is the bytes of the step's NumPy inputs and parameters plus what one warm step
    adds to resident memory at its peak (outputs and every temporary); buffers a backend keeps
    between steps (library workspaces, JAX's copies of the inputs) are not counted.
    """
    from .backends import PEERS, get

    threads = threads or os.cpu_count() or 1
    names = []
    for name in backend_names:
        ok, why = get(name).available()
        if ok:
            names.append(name)
        else:
            log(f"skipping {name}: {why}")
    if "numba" not in names:
        names.insert(0, "numba")  # the GEMM times come from our worker
    workers = {name: _Worker(name, threads) for name in names}
    memory_workers = {name: _Worker(name, threads, for_memory=True) for name in names} if measure_memory else {}
    rows = []
    bar = Progress(len(points), enabled=progress)
    try:
        for point in points:
            results, notes = {}, {}
            for name, worker in workers.items():
                try:
                    results[name] = worker.ask("setup", (point, loss, False))
                except RuntimeError as error:
                    notes[name] = str(error)
            expected, checked_against = _expected(point, loss, results.get("numpy"))
            for name in list(results):
                ok, why = _agrees(results[name], expected, point.dtype)
                if not ok:
                    notes[name] = f"disagrees with {checked_against}: {why}"
                    del results[name]
            timed = [name for name in workers if name in results]
            samples = {name: [] for name in timed}
            gemm = []
            for round_index in range(repeat):
                order = timed[round_index % len(timed):] + timed[:round_index % len(timed)]
                for name in order:
                    time.sleep(_SETTLE_S)
                    samples[name].append(workers[name].ask("time"))
                if "numba" in results:
                    time.sleep(_SETTLE_S)
                    gemm.append(workers["numba"].ask("time", "gemm"))
            gemm_s = float(np.median(gemm)) if gemm else float("nan")
            for name in workers:
                row = dict(asdict(point), backend=name, checked_against=checked_against, note=notes.get(name, ""))
                if name in samples:
                    times = np.array(samples[name])
                    peak = None
                    if name in memory_workers:
                        memory_workers[name].ask("setup", (point, loss, True))
                        peak = memory_workers[name].ask("peakmem")
                    row.update(median_s=float(np.median(times)), q25_s=float(np.percentile(times, 25)),
                               q75_s=float(np.percentile(times, 75)), gemm_s=gemm_s,
                               gflops=point.flops / float(np.median(times)) / 1e9,
                               over_gemm=float(np.median(times)) / gemm_s,
                               peak_bytes=peak, peak_over_inputs=None if peak is None else peak / point.input_bytes())
                rows.append(row)
            ours = next((r for r in rows[-len(workers):] if r["backend"] == "numba" and "median_s" in r), None)
            peers = [r["median_s"] for r in rows[-len(workers):] if r["backend"] in PEERS and "median_s" in r]
            if ours and peers:
                ours["speedup_over_best_peer"] = min(peers) / ours["median_s"]
            bar.step(point.label)
    finally:
        for worker in list(workers.values()) + list(memory_workers.values()):
            worker.close()
    return rows


# --- reporting -----------------------------------------------------------------------------------

def environment(backend_names):
    """What the table's numbers were measured on."""
    from .backends import get
    from .threads import config_info

    info = config_info()
    versions = {}
    for name in backend_names:
        backend = get(name)
        if backend.available()[0]:
            try:
                versions[name] = backend.version()
            except Exception as error:  # a broken peer install is reported, not fatal
                versions[name] = f"unavailable ({error})"
    blas = "; ".join(f"{b['internal_api']} {b['version']} ({b['architecture']})" for b in info["blas"])
    return {"date": time.strftime("%Y-%m-%d"), "cpu": info["cpu"], "cores": info["cores"], "blas": blas,
            "threading_layer": info["threading_layer"], "threads": info["num_threads"],
            "python": info["python"], "platform": platform.platform(), "versions": versions}


def format_table(rows, env):
    """The results as a plain-text table with a header describing the machine."""
    lines = [f"# {env['date']}  {env['cpu']}, {env['cores']} cores, {env['threads']} threads, "
             f"BLAS {env['blas']}, Numba layer {env['threading_layer']}",
             "# " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
             f"{'shape':<42} {'backend':<10} {'median ms':>10} {'IQR ms':>15} {'GFLOP/s':>8} {'/GEMM':>6} "
             f"{'vs best peer':>12} {'peak MB':>8} {'/inputs':>7}"]
    for row in rows:
        shape = f"{row['layout']} n={row['n']} d={row['d']} m={row['m']} T={row['T']} {row['dtype']}"
        if "median_s" not in row:
            lines.append(f"{shape:<42} {row['backend']:<10} {row['note']}")
            continue
        speedup = f"{row['speedup_over_best_peer']:.2f}x" if row.get("speedup_over_best_peer") else ""
        peak = "" if row["peak_bytes"] is None else f"{row['peak_bytes'] / 2**20:8.1f}"
        ratio = "" if row["peak_over_inputs"] is None else f"{row['peak_over_inputs']:7.2f}"
        lines.append(f"{shape:<42} {row['backend']:<10} {row['median_s'] * 1e3:10.2f} "
                     f"{row['q25_s'] * 1e3:7.2f}-{row['q75_s'] * 1e3:<7.2f} {row['gflops']:8.1f} "
                     f"{row['over_gemm']:6.2f} {speedup:>12} {peak:>8} {ratio:>7}")
    speedups = [r["speedup_over_best_peer"] for r in rows if r.get("speedup_over_best_peer")]
    if speedups:
        lines.append(f"# speedup over the best peer: geometric mean {math.exp(np.mean(np.log(speedups))):.2f}x, "
                     f"min {min(speedups):.2f}x, over {len(speedups)} points")
    return "\n".join(lines)


def _plots(rows, points, out):
    """Throughput against d, m and T, one line per backend, for each layout's sweeps."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    # Sweeps vary one size around the first point of each layout; along T the per-task sweep
    # also varies n (T n is kept fixed), so only d and m must match the base there.
    held = {"d": ("n", "m", "T"), "m": ("n", "d", "T"), "T": ("d", "m")}
    written = []
    for layout in dict.fromkeys(p.layout for p in points):
        base = asdict(next(p for p in points if p.layout == layout))
        timed = [r for r in rows if r["layout"] == layout and "median_s" in r and r["dtype"] == base["dtype"]]
        for axis, fixed in held.items():
            sweep = [r for r in timed if all(r[k] == base[k] for k in fixed)]
            if len({r[axis] for r in sweep}) < 2:
                continue
            fig, ax = plt.subplots(figsize=(5.5, 3.8))
            for backend in dict.fromkeys(r["backend"] for r in sweep):
                ax.plot(*zip(*sorted((r[axis], r["gflops"]) for r in sweep if r["backend"] == backend)),
                        marker="o", label=backend)
            ax.set_xscale("log", base=2)
            ax.set_xlabel(axis)
            ax.set_ylabel("GFLOP/s (one step)")
            ax.set_title(f"{layout}: throughput against {axis} ("
                         + ", ".join(f"{k}={base[k]}" for k in fixed) + f", {base['dtype']})", fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            fig.tight_layout()
            name = f"throughput-{layout}-{axis}.png"
            fig.savefig(out / name, dpi=110)
            plt.close(fig)
            written.append(name)
    return written


def write_outputs(rows, env, points, out):
    """bench.json, bench.csv, table.txt and throughput plots in ``out``; returns the table text."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = format_table(rows, env)
    (out / "bench.json").write_text(json.dumps({"environment": env, "rows": rows}, indent=1), encoding="utf-8")
    fields = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (out / "bench.csv").write_text(buffer.getvalue(), encoding="utf-8")
    (out / "table.txt").write_text(table + "\n", encoding="utf-8")
    _plots(rows, points, out)
    return table
