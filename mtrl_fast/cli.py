"""The ``mtrl-fast`` command.

Every option is checked before any work starts; a bad one is a one-line message naming it, with
exit status 2. Errors during a run are one line and exit status 1 (``--debug``, or
``MTRL_FAST_DEBUG=1``, shows the traceback); a run stopped by SIGINT or SIGTERM exits with 130 or
143 after ending its workers.
"""

import argparse
import os
import signal
import sys
import threading
from importlib import import_module

from . import _cli_types as types
from .bench.backends import BACKENDS, OURS, PEERS  # plain names: no benchmark dependency
from .losses import DTYPES, LAYOUTS, LOSSES, PER_TASK, SHARED

#: ``paper.studies.STUDIES`` and ``paper.train.SAMPLERS``: the paper's modules load only when needed.
STUDY_NAMES = ("recovery", "downstream", "mechanism", "width")
SAMPLER_NAMES = ("auto", "full", "reduced")


class MissingExtra(Exception):
    """An optional part's dependencies are not installed."""


class OptionError(Exception):
    """Options that are each valid but do not work together (or do not fit this machine)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line: no usage block above the message."""

    def error(self, message):
        message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)  # a typed "\r" stays visible
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _part(module, extra):
    """Import ``mtrl_fast.<module>``; a missing dependency becomes a message naming the extra."""
    try:
        return import_module(f"mtrl_fast.{module}")
    except ImportError as error:
        raise MissingExtra(f"{error} (install it with: pip install 'mtrl_fast[{extra}]')") from error


def _cmd_step(args):
    import mtrl_fast
    from mtrl_fast import reference
    from mtrl_fast.bench.timing import breakdown, time_call
    from mtrl_fast.bench.workload import Point, step_inputs

    point = Point(args.layout, args.n, args.d, args.m, args.T, args.dtype)
    _check_memory(3 * point.input_bytes(), f"a step at (n, d, m, T) = ({args.n}, {args.d}, {args.m}, {args.T})")
    X, Y, W, b, A = step_inputs(args.layout, args.n, args.d, args.m, args.T, args.dtype)
    print(
        f"one loss_and_grad step, {args.layout} layout, (n, d, m, T) = ({args.n}, {args.d}, {args.m}, {args.T}), "
        f"{args.dtype}, {mtrl_fast.get_num_threads()} threads, median of {args.repeat}"
    )
    ours = time_call(mtrl_fast.loss_and_grad, (X, Y, W, b, A, args.loss), args.repeat)
    print(f"  mtrl_fast  {ours[0] * 1e3:10.2f} ms  (min {ours[1] * 1e3:.2f}, max {ours[2] * 1e3:.2f})")
    if args.breakdown:
        total, parts = breakdown(mtrl_fast.loss_and_grad, (X, Y, W, b, A, args.loss), args.repeat)
        print(f"  where the time goes (median of {args.repeat} steps, {total * 1e3:.2f} ms each):")
        for label, seconds in parts.items():
            print(f"    {label:<48} {seconds * 1e3:9.3f} ms  {seconds / total:6.1%}")
    if args.reference:
        ref = time_call(reference.loss_and_grad, (X, Y, W, b, A, args.loss), args.reference_repeat)
        print(f"  reference  {ref[0] * 1e3:10.2f} ms  (min {ref[1] * 1e3:.2f}, max {ref[2] * 1e3:.2f})")
        print(f"  speedup    {ref[0] / ours[0]:10.1f}x")
    return 0


def _cmd_bench_cell(args):
    import json
    from pathlib import Path

    import numpy as np

    from mtrl_fast.bench.backends import get
    from mtrl_fast.bench.cell import CELL_BACKENDS, CellSpec, agreement_tolerance, run_cell_benchmark
    from mtrl_fast.bench.output import environment

    d, T = args.cell
    names = []
    for name in (name for name in args.backends if name in CELL_BACKENDS):
        available, why = get(name).available()
        if available:
            names.append(name)
        else:
            print(f"mtrl-fast bench: skipping {name}: {why}", file=sys.stderr)
    threads = args.threads or os.cpu_count() or 1
    repeat = args.repeat or 3
    spec = CellSpec(d=d, T=T)
    env = environment(names)
    print(
        f"a paper cell (d = {d}, T = {T}, n = {spec.n}, width {spec.width}, one round), "
        f"{len(names)} implementations x {repeat} alternating runs, {threads} threads each",
        file=sys.stderr,
    )
    results = run_cell_benchmark(
        spec,
        tuple(names),
        threads=threads,
        repeat=repeat,
        native_blas=args.native_blas,
        log=lambda text: print(text, file=sys.stderr),
    )
    like_for_like = f"{OURS} full"
    ours = np.median(results[like_for_like]["seconds"]) if like_for_like in results else None
    lines = [
        f"# {env['date']}  {env['cpu']}, {env['cores']} cores, {threads} threads, BLAS {env['blas']}",
        "# " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        f"# the distances agree within {agreement_tolerance(results):.4f} (the seeds' spread, measured)",
        f"{'implementation':<18} {'sampler':<8} {'coords':>6} {'GFLOP':>8} {'median s':>9} {'min s':>8} "
        f"{'distance':>9} {'/ ours full':>12}",
    ]
    for name, result in results.items():
        median = np.median(result["seconds"])
        lines.append(
            f"{name:<18} {result['sampler']:<8} {result['coordinates']:>6} {result['flops'] / 1e9:8.1f} "
            f"{median:9.2f} {min(result['seconds']):8.2f} {np.mean(result['distance']):9.4f} "
            f"{'' if ours is None else f'{median / ours:11.2f}x':>12}"
        )
    table = "\n".join(lines)
    print(table)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "cell.json").write_text(
        json.dumps({"spec": vars(spec), "environment": env, "threads": threads, "results": results}, indent=1),
        encoding="utf-8",
    )
    print(f"\nwritten: {args.out}/cell.json")
    return 0


def _cmd_bench(args):
    if args.cell:
        return _cmd_bench_cell(args)
    args.repeat = args.repeat or 7
    from mtrl_fast.bench.output import environment, write_outputs
    from mtrl_fast.bench.runner import run_benchmarks, worker_blas
    from mtrl_fast.bench.workload import TARGET_POINTS, Point, make_grid

    points = make_grid(layouts=args.layout, ds=args.d, ms=args.m, Ts=args.T, dtypes=args.dtype, quick=args.quick)
    if args.targets:
        points = [p.replace(dtype=dtype) for p in TARGET_POINTS for dtype in args.dtype if p.layout in args.layout]
    if args.shapes:
        points = [Point(layout, *sizes, dtype) for layout, sizes in args.shapes for dtype in args.dtype]
    env = environment(args.backends)
    if args.native_blas:
        env.update(blas=worker_blas(native_blas=True), blas_pins=None)
    elif env.get("blas_pins"):
        print(f"mtrl-fast bench: {env['blas_pins']} (--native-blas runs the backends without them)", file=sys.stderr)
    print(
        f"{len(points)} shapes x {len(args.backends)} backends, {args.repeat} alternating rounds each", file=sys.stderr
    )
    rows = run_benchmarks(
        points,
        args.backends,
        threads=args.threads,
        repeat=args.repeat,
        loss=args.loss,
        progress=not args.no_progress,
        log=lambda text: print(text, file=sys.stderr),
        native_blas=args.native_blas,
        workload="round" if args.round else "step",
        gemm=args.gemm,
    )
    print(write_outputs(rows, env, points, args.out))
    print(f"\nwritten: {args.out}/bench.json, bench.csv, table.txt, throughput-*.png")
    return 0


def _cell_size(text):
    """``400,1000`` -> (d, T)."""
    values = types.positive_ints(text)
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected D,T such as 400,1000, got {text!r}")
    return values


def _shapes(text):
    """``shared:1024,256,256,64;per-task:256,512,256,64`` -> [(layout, (n, d, m, T)), ...]"""
    shapes = []
    for item in filter(None, (part.strip() for part in text.split(";"))):
        layout, _, sizes = item.partition(":")
        values = types.positive_ints(sizes)
        if layout not in LAYOUTS or len(values) != 4:
            raise argparse.ArgumentTypeError(f"expected LAYOUT:n,d,m,T with LAYOUT one of {LAYOUTS}, got {item!r}")
        shapes.append((layout, values))
    return shapes


def _cmd_info(args):
    import mtrl_fast
    from mtrl_fast import gemms
    from mtrl_fast._info import gemm_timings_lines

    mtrl_fast.show_config()
    timings = gemms.auto_timings(retime=args.time_gemm, measure=args.time_gemm)
    if timings is None:
        print(f"{'gemm auto':>20}: not timed on this machine yet (mtrl-fast info --time-gemm)")
    else:
        for k, line in enumerate(gemm_timings_lines(timings)):
            print(f"{'gemm auto' if k == 0 else '':>20}{':' if k == 0 else ' '} {line}")
    return 0


def _check_memory(need, what):
    from mtrl_fast._platform import available_memory  # not the paper's part: step needs no scipy

    available = available_memory()
    if available is not None and need > available:
        raise OptionError(
            f"{what} needs about {need / 2**30:.1f} GiB, and this machine has {available / 2**30:.1f} GiB available"
        )


def _cmd_reproduce(args):
    from dataclasses import replace

    _part("paper", "paper")
    from mtrl_fast.paper.experiments import (
        DEFAULT_MEMORY_BUDGET,
        QUICK,
        Grid,
        default_memory_budget,
        memory_problem,
        reproduce,
    )
    from mtrl_fast.paper.report import claims_table

    base = QUICK if args.quick else Grid()
    pretrain_changes = {
        name: value
        for name, value in (
            ("width", args.width),
            ("samples_per_task", args.samples_per_task),
            ("rounds", args.rounds),
            ("head_steps", args.head_steps),
            ("head_lr", args.head_lr),
            ("lr", args.lr),
            ("weight_decay", args.weight_decay),
            ("loss", args.loss),
            ("layout", args.layout),
            ("sampler", args.sampler),
        )
        if value is not None
    }
    grid_changes = {
        name: value
        for name, value in (
            ("d", args.d),
            ("r", args.r),
            ("tasks", args.tasks),
            ("seeds", args.seeds),
            ("n_new", args.n_new),
            ("downstream_d", args.downstream_d),
            ("downstream_tasks", args.downstream_tasks),
            ("label_kind", args.labels),
            ("noise", args.noise),
            ("base_seed", args.base_seed),
            ("studies", args.studies),
            ("widths", args.widths),
            ("width_d", args.width_d),
            ("mechanism_points", args.mechanism_points),
        )
        if value is not None
    }
    try:
        grid = replace(base, pretrain=replace(base.pretrain, **pretrain_changes), **grid_changes)
    except ValueError as error:
        raise OptionError(error) from None
    jobs = args.jobs or max(1, (os.cpu_count() or 1) // args.threads)
    on_cluster = bool(args.scheduler or args.scheduler_file)
    if on_cluster:  # the workers' memory is theirs to know: the budget alone bounds a cell
        budget = args.memory_budget or DEFAULT_MEMORY_BUDGET
    else:
        budget = args.memory_budget or default_memory_budget(jobs)
        problem = memory_problem(grid, jobs, budget)
        if problem:
            raise OptionError(f"{problem}: lower --d or --samples-per-task" + (", or --jobs" if jobs > 1 else ""))
    rows = reproduce(
        grid,
        args.out,
        jobs=jobs,
        progress=not args.no_progress,
        threads=args.threads,
        memory_budget=budget,
        scheduler=args.scheduler,
        scheduler_file=args.scheduler_file,
    )
    print()
    print(claims_table(rows))
    if args.profile:
        import json
        from pathlib import Path

        from mtrl_fast.paper.report import profile_table

        timing = json.loads((Path(args.out) / "results.json").read_text(encoding="utf-8"))["profile"]
        print(f"\nwhere the time went ({timing['cells']} cells, summed):")
        print(profile_table(timing))
    print(f"\nreport: {args.out}/report.md (results.json, a CSV per study, claims.csv, the figures beside it)")
    if args.strict:
        failed = [row["claim"] for row in rows if row["holds"] is False]
        unevaluated = [row["claim"] for row in rows if row["holds"] is None]
        if failed:
            print(f"--strict: {len(failed)} claim(s) fail", file=sys.stderr)
            return 1
        if unevaluated and not args.allow_unevaluated:
            print(
                f"--strict: {len(unevaluated)} claim(s) not evaluated on this grid (see the report for why); "
                "add --allow-unevaluated to accept that",
                file=sys.stderr,
            )
            return 1
    return 0


def build_parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the traceback of an error (or MTRL_FAST_DEBUG=1)")
    parser = _Parser(prog="mtrl-fast", description=__doc__.split("\n")[0], parents=[common])
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser(
        "info", parents=[common], help="versions, threading layer, BLAS: paste into a bug report"
    )
    info.add_argument(
        "--time-gemm",
        action="store_true",
        help="time the GEMM providers for 'auto' now (again), and keep the result (see mtrl_fast.set_gemm)",
    )
    info.set_defaults(run=_cmd_info)

    step = commands.add_parser(
        "step", parents=[common], help="time one loss_and_grad step, optionally against the NumPy reference"
    )
    step.add_argument("--layout", choices=LAYOUTS, default=SHARED)
    for name, default in (("n", 1024), ("d", 256), ("m", 256), ("T", 64)):
        step.add_argument(f"--{name}", type=types.positive_int, default=default)
    step.add_argument("--dtype", choices=DTYPES, default="float32")
    step.add_argument("--loss", choices=LOSSES, default="logistic")
    step.add_argument("--repeat", type=types.positive_int, default=7)
    step.add_argument(
        "--breakdown",
        action="store_true",
        help="also print where a step's time goes: checks, each product, each fused pass",
    )
    step.add_argument("--reference", action="store_true", help="also time mtrl_fast.reference")
    step.add_argument("--reference-repeat", type=types.positive_int, default=3)
    step.set_defaults(run=_cmd_step)

    bench = commands.add_parser(
        "bench",
        parents=[common],
        help="side-by-side step timings: ours against NumPy, PyTorch and JAX",
        description="Time one loss_and_grad step per backend, each in its own process, over a grid of shapes; "
        "print a table and write bench.json, bench.csv, table.txt and throughput plots to --out.",
    )
    bench.add_argument(
        "--quick", action="store_true", help="a small grid (docs/benchmarks.md gives its time on a 2-core machine)"
    )
    bench.add_argument("--targets", action="store_true", help="only the four speed-target shapes")
    bench.add_argument(
        "--shapes", type=_shapes, help="exact shapes instead of a grid: 'shared:n,d,m,T;per-task:n,d,m,T'"
    )
    bench.add_argument("--d", type=types.positive_ints, help="sweep of input dimensions, e.g. 64,256,1024")
    bench.add_argument("--m", type=types.positive_ints, help="sweep of widths")
    bench.add_argument("--T", type=types.positive_ints, help="sweep of task counts")
    bench.add_argument(
        "--layout", type=types.choices(LAYOUTS), default=LAYOUTS, help=f"comma-separated, from {', '.join(LAYOUTS)}"
    )
    bench.add_argument(
        "--dtype", type=types.choices(DTYPES), default=("float32",), help=f"comma-separated, from {', '.join(DTYPES)}"
    )
    bench.add_argument(
        "--backends",
        type=types.choices(BACKENDS),
        default=(OURS, *PEERS),
        help=f"comma-separated, from {', '.join(BACKENDS)}",
    )
    bench.add_argument("--threads", type=types.thread_count, help="threads per backend (default: all cores)")
    bench.add_argument(
        "--repeat",
        type=types.positive_int,
        help="alternating rounds per shape (default 7; with --cell, runs per implementation, default 3)",
    )
    bench.add_argument(
        "--cell",
        type=_cell_size,
        metavar="D,T",
        help="time a whole paper cell instead (sampling included: ours, PyTorch, JAX), e.g. 400,1000",
    )
    bench.add_argument("--loss", choices=LOSSES, default="logistic")
    bench.add_argument(
        "--round",
        action="store_true",
        help="time a training round (a head step, then a first-layer step) instead of one step",
    )
    bench.add_argument(
        "--native-blas",
        action="store_true",
        help="run the backends without OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE: this CPU's own kernels",
    )
    bench.add_argument(
        "--gemm",
        type=types.gemm_name,
        help="the GEMM our step and our framework ops run their products on: numpy, torch, mkl or auto "
        "(default: MTRL_FAST_GEMM, else NumPy's BLAS, and PyTorch's matmul in mtrl_fast.torch's ops)",
    )
    bench.add_argument("--out", type=types.output_folder, default="bench-results")
    bench.add_argument("--no-progress", action="store_true")
    bench.set_defaults(run=_cmd_bench)

    rep = commands.add_parser(
        "reproduce",
        parents=[common],
        help="the paper's experiments: subspace recovery against T, downstream probes",
        description="Run the reproduction grid into --out (resuming a killed run), then write results.json, "
        "a CSV and a figure per study (recovery.csv, recovery.png, ...), claims.csv and report.md.",
    )
    rep.add_argument("--quick", action="store_true", help="small grid: d 50,200; T 1,5,20,100; n_new 20,100")
    rep.add_argument("--out", type=types.output_folder, default="results", help="output folder (default: results)")
    rep.add_argument("--d", type=types.positive_ints, help="input dimensions of the recovery study, e.g. 50,100,200")
    rep.add_argument("--r", type=types.positive_int, help="dimension of the ground-truth subspace (default 5)")
    rep.add_argument("--tasks", type=types.positive_ints, help="task counts T, e.g. 1,2,5,10,20,50,100")
    rep.add_argument("--seeds", type=types.positive_int, help="repetitions of every cell")
    rep.add_argument("--width", type=types.positive_int, help="neurons m (default 256)")
    rep.add_argument("--samples-per-task", type=types.positive_int, help="n1 = n2 per task per phase (default 5 d)")
    rep.add_argument("--n-new", type=types.positive_ints, help="samples of a new task for the probe, e.g. 10,20,50")
    rep.add_argument("--downstream-d", type=types.positive_ints, help="input dimensions of the downstream study")
    rep.add_argument(
        "--downstream-tasks", type=types.positive_int, help="T of the multi-task features probed downstream"
    )
    rep.add_argument("--rounds", type=types.positive_int, help="alternating rounds (default 1: one large step)")
    rep.add_argument("--head-steps", type=types.positive_int, help="head steps per round")
    rep.add_argument("--head-lr", type=types.positive_float, help="head step size")
    rep.add_argument("--lr", type=types.positive_float, help="first-layer step size")
    rep.add_argument("--weight-decay", type=types.nonnegative_float, help="first-layer weight decay lambda")
    rep.add_argument("--loss", choices=LOSSES)
    rep.add_argument("--layout", choices=(PER_TASK, SHARED))
    rep.add_argument(
        "--sampler",
        choices=SAMPLER_NAMES,
        help="full: inputs in all d coordinates; reduced: only in a basis of span(M) + span(W^T), the rest "
        "of the gradient drawn from its exact law (per-task layout); auto (default): reduced where d >= 1.5 "
        "(r + width), where it is the cheaper",
    )
    rep.add_argument(
        "--studies",
        type=types.choices(STUDY_NAMES),
        help="comma-separated, from recovery, downstream, mechanism, width (default recovery,downstream,mechanism)",
    )
    rep.add_argument("--widths", type=types.positive_ints, help="widths m of the width study (default 8,16,...,256)")
    rep.add_argument(
        "--width-d", type=types.positive_ints, help="input dimensions of the width study (default 100,10000)"
    )
    rep.add_argument(
        "--mechanism-points", type=types.positive_int, help="held-out points of the mechanism study (default 500)"
    )
    rep.add_argument("--labels", choices=["linear", "relu-teacher"], help="label family")
    rep.add_argument("--noise", type=types.probability_below_half, help="label-flip probability, in [0, 0.5)")
    rep.add_argument("--base-seed", type=types.nonnegative_int)
    rep.add_argument(
        "--jobs",
        type=types.positive_int,
        help="cells computed at once, each in its own process (default: cores / --threads)",
    )
    rep.add_argument(
        "--threads",
        type=types.thread_count,
        default=1,
        help="threads of each cell (default 1); records are bitwise identical for equal --threads, whatever --jobs",
    )
    cluster = rep.add_mutually_exclusive_group()
    cluster.add_argument(
        "--scheduler",
        type=types.scheduler_address,
        metavar="ADDRESS",
        help="run the cells on the Dask cluster at ADDRESS (tcp://host:port); needs "
        "mtrl_fast[distributed] here and mtrl_fast[paper] on the workers",
    )
    cluster.add_argument(
        "--scheduler-file",
        type=types.existing_file,
        metavar="FILE",
        help="the same, for the scheduler described in FILE (dask scheduler --scheduler-file)",
    )
    rep.add_argument(
        "--memory-budget",
        type=types.memory_size,
        help="memory a cell may hold, e.g. 2G; a larger pretraining batch is drawn and used in shards of "
        "tasks (default: 1G, or half the available memory shared by --jobs if less)",
    )
    rep.add_argument("--no-progress", action="store_true")
    rep.add_argument(
        "--strict", action="store_true", help="exit 1 when a claim fails, or when the grid cannot evaluate one"
    )
    rep.add_argument(
        "--allow-unevaluated",
        action="store_true",
        help="with --strict: accept claims the grid cannot evaluate (a trend needs three task counts, say)",
    )
    rep.add_argument(
        "--profile",
        action="store_true",
        help="print where the cells' time went (sampling, kernels, metrics, probe); the report has it too",
    )
    rep.set_defaults(run=_cmd_reproduce)
    return parser


def _note_first_compilation():
    """Say why the first run is slow: the kernels compile once, then load from Numba's disk cache."""
    from ._kernels import compiled_before

    if not compiled_before():
        print(
            "mtrl-fast: compiling the kernels the run uses (first run only: later runs load them from the cache)...",
            file=sys.stderr,
            flush=True,
        )


def _stop_on_sigterm(number, frame):
    raise KeyboardInterrupt("SIGTERM")


def main(argv=None):
    # From here on SIGTERM stops a command as Ctrl-C does, with the message below and exit 143,
    # whatever the command is doing (before this line, in the imports, it ends the process at once).
    previous = (
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
        if threading.current_thread() is threading.main_thread()
        else None
    )
    try:
        return _main(argv)
    except KeyboardInterrupt as stop:  # while the arguments were parsed, before the command began
        return _stopped(stop, "mtrl-fast", "")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _stopped(stop, prog, resume):
    """Say how the command was stopped; the exit status of a process ended by that signal."""
    how = str(stop) or "SIGINT"
    print(f"\n{prog}: stopped by {how}{resume}", file=sys.stderr)
    return 143 if how == "SIGTERM" else 130


def _main(argv):
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("MTRL_FAST_DEBUG", "") not in ("", "0")
    prog = f"mtrl-fast {args.command}"
    try:
        _note_first_compilation()
        return args.run(args)
    except (MissingExtra, OptionError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:  # SIGINT, or SIGTERM (see main)
        resume = (
            f"; finished cells are kept in {args.out}: run the same command to resume"
            if args.command == "reproduce"
            else ""
        )
        return _stopped(stop, prog, resume)
    except Exception as error:  # noqa: BLE001 - the one place that turns any failure into a message
        if debug:
            raise
        text = str(error) or type(error).__name__
        if isinstance(error, OSError) and error.filename:
            text = f"{error.strerror or error} ({error.filename})"
        print(f"{prog}: error: {text} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
