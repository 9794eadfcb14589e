"""The ``mtrl-fast`` command's commands: each takes the parsed options and returns the exit
status. The parser and the error handling are in ``mtrl_fast.cli``."""

import os
import sys
from importlib import import_module

from ._cli_types import MissingExtra, OptionError
from .bench.peers import OURS


def _part(module, extra):
    """Import ``mtrl_fast.<module>``; a missing dependency becomes a message naming the extra."""
    try:
        return import_module(f"mtrl_fast.{module}")
    except ImportError as error:
        raise MissingExtra(f"{error} (install it with: pip install 'mtrl_fast[{extra}]')") from error


def step(args):
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


def _bench_cell(args):
    import json
    from pathlib import Path

    import numpy as np

    from mtrl_fast.bench.cell import AGREEMENT_SE, CellSpec, agreement_tolerance, cell_peers, run_cell_benchmark
    from mtrl_fast.bench.output import environment
    from mtrl_fast.bench.peers import get

    d, T = args.cell
    names = []
    for name in (name for name in args.backends if name in cell_peers()):
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
    reference = next(result for name, result in results.items() if "spread" in result or name == f"{OURS} full")
    spread_runs = len(reference["distance"] + reference.get("spread", []))
    like_for_like = f"{OURS} full"
    ours = np.median(results[like_for_like]["seconds"]) if like_for_like in results else None
    lines = [
        f"# {env['date']}  {env['cpu']}, {env['cores']} cores, {threads} threads, BLAS {env['blas']}",
        "# " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        f"# every mean distance lies within {agreement_tolerance(reference, repeat):.4f} of ours "
        f"({AGREEMENT_SE:g} standard errors, from the spread of ours over {spread_runs} seeds)",
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


def bench(args):
    if args.cell:
        return _bench_cell(args)
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


def info(args):
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
    if args.compile_times:
        _print_compile_times()
    return 0


def _print_compile_times():
    """The table of ``info --compile-times``: seconds per kernel, twin and float type."""
    from mtrl_fast._kernels import _compile

    print("\ncompilation with an empty cache, seconds (a kernel's first build also compiles its helpers):")
    print(f"{'kernel':<26}{'twin':<10}{'float32':>9}{'float64':>9}")
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for name in _compile.KERNELS:
        for build, seconds in _compile.compile_times(_compile.builds([name])):
            rows.setdefault((build.kernel, build.twin), {})[build.float_type] = seconds
        for twin in _compile.TWINS:
            times = rows[(name, twin)]
            print(f"{name:<26}{twin:<10}{times['float32']:>9.2f}{times['float64']:>9.2f}", flush=True)
    total = sum(t for times in rows.values() for t in times.values())
    print(f"{'all':<36}{total:>18.1f}")


def _check_memory(need, what):
    from mtrl_fast._platform import available_memory  # not the paper's part: step needs no scipy

    available = available_memory()
    if available is not None and need > available:
        raise OptionError(
            f"{what} needs about {need / 2**30:.1f} GiB, and this machine has {available / 2**30:.1f} GiB available"
        )


def reproduce(args):
    _part("paper", "paper")
    from mtrl_fast.paper.experiments import (
        DEFAULT_MEMORY_BUDGET,
        QUICK,
        Grid,
        default_memory_budget,
        memory_problem,
        reproduce,
    )
    from mtrl_fast.paper.options import from_parsed
    from mtrl_fast.paper.report import claims_table

    base = QUICK if args.quick else Grid()
    try:
        grid = from_parsed(base, args)
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
