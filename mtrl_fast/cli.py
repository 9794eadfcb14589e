"""The ``mtrl-fast`` command.

Every option is checked before any work starts; a bad one is a one-line message naming it, with
exit status 2. Errors during a run are one line and exit status 1 (``--debug``, or
``MTRL_FAST_DEBUG=1``, shows the traceback); a run stopped by SIGINT or SIGTERM exits with 130 or
143 after ending its workers. The parser and the error handling are here; the commands in
``_commands``, the option types in ``_cli_types``.
"""

import argparse
import os
import signal
import sys
import threading

from . import _cli_types as types
from . import _commands
from ._cli_types import MissingExtra, OptionError
from .bench import peers  # the peers' names: their modules import what they run lazily
from .losses import DTYPES, LAYOUTS, LOSSES, SHARED


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line: no usage block above the message."""

    def error(self, message):
        message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)  # a typed "\r" stays visible
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _studies():
    """``paper.studies.STUDIES``, or ``None`` where the paper's extra is missing (``reproduce`` then says so)."""
    try:
        from .paper.studies import STUDIES
    except ImportError:
        return None
    return STUDIES


def _add_settings(rep, studies):
    """An option for every setting the grid declares (``mtrl_fast.paper.options``: the grid's and
    the training configuration's fields, and the parameters the studies add), with its help and
    default; without the paper's extra, none: ``reproduce`` then names the missing extra."""
    if studies is None:
        return
    from .paper.grid import Grid
    from .paper.options import options_of

    for declared in options_of(Grid()):
        option = declared.option
        how = {"help": option.describe(declared.default), "dest": declared.dest}
        if option.kind == "choice":
            how["choices"] = option.allowed()
        else:  # argparse would name the value after the dest, "pretrain.width": name it after the flag
            parse = types.choices(option.allowed()) if option.kind == "names" else getattr(types, option.kind)
            how.update(type=parse, metavar=declared.flag[2:].upper().replace("-", "_"))
        rep.add_argument(declared.flag, **how)


def _quick_summary():
    """What ``--quick`` changes, from ``grid.QUICK`` itself."""
    from .paper.grid import QUICK, Grid
    from .paper.options import differences, text

    return "; ".join(f"{flag[2:]} {text(value)}" for flag, value in differences(QUICK, Grid()))


def build_parser(paper=True):
    """The parser; ``paper=False`` leaves out the options the paper's studies declare (no import of
    the paper's modules: for the other commands)."""
    studies = _studies() if paper else None
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the traceback of an error (or MTRL_FAST_DEBUG=1)")
    parser = _Parser(prog="mtrl-fast", description=__doc__.split("\n")[0], parents=[common])
    commands = parser.add_subparsers(dest="command", required=True)

    _add_info(commands, common)
    _add_step(commands, common)
    _add_bench(commands, common)
    _add_reproduce(commands, common, studies)
    return parser


def _add_info(commands, common):
    """``mtrl-fast info``."""
    info = commands.add_parser(
        "info", parents=[common], help="versions, threading layer, BLAS: paste into a bug report"
    )
    info.add_argument(
        "--time-gemm",
        action="store_true",
        help="time the GEMM providers for 'auto' now (again), and keep the result (see mtrl_fast.set_gemm)",
    )
    info.add_argument(
        "--compile-times",
        action="store_true",
        help="time the compilation of every kernel, twin and float type with an empty cache, each kernel in a "
        "fresh process (about two minutes on 2 cores); nothing is kept",
    )
    info.set_defaults(run=_commands.info)


def _add_step(commands, common):
    """``mtrl-fast step``."""
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
    step.set_defaults(run=_commands.step)


def _add_bench(commands, common):
    """``mtrl-fast bench``."""
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
        "--shapes", type=types.shapes, help="exact shapes instead of a grid: 'shared:n,d,m,T;per-task:n,d,m,T'"
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
        type=types.choices(peers.names()),
        default=peers.defaults(),
        help=f"comma-separated, from {', '.join(peers.names())} (default: {','.join(peers.defaults())}; "
        f"a peer of your own: a module named in {peers.VARIABLE})",
    )
    bench.add_argument("--threads", type=types.thread_count, help="threads per backend (default: all cores)")
    bench.add_argument(
        "--repeat",
        type=types.positive_int,
        help="alternating rounds per shape (default 7; with --cell, runs per implementation, default 3)",
    )
    bench.add_argument(
        "--cell",
        type=types.cell_size,
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
    bench.set_defaults(run=_commands.bench)


def _add_reproduce(commands, common, studies):
    """``mtrl-fast reproduce``: its settings from the grid's fields (with the paper's extra)."""
    rep = commands.add_parser(
        "reproduce",
        parents=[common],
        help="the paper's experiments: subspace recovery against T, downstream probes",
        description="Run the reproduction grid into --out (resuming a killed run), then write results.json, "
        "a CSV and a figure per study (recovery.csv, recovery.png, ...), claims.csv and report.md.",
    )
    rep.add_argument(
        "--quick",
        action="store_true",
        help="a small grid" + (f" ({_quick_summary()})" if studies is not None else ""),
    )
    rep.add_argument("--out", type=types.output_folder, default="results", help="output folder (default: results)")
    _add_settings(rep, studies)
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
    rep.set_defaults(run=_commands.reproduce)


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


def _command_of(argv):
    """The command ``argv`` names, read as the parser reads it: the top level takes flags alone, so
    its first positional argument is the command (``bench --out reproduce`` is ``bench``)."""
    skeleton = argparse.ArgumentParser(add_help=False)
    skeleton.add_argument("--debug", action="store_true")
    skeleton.add_argument("command", nargs="?")
    skeleton.add_argument("rest", nargs=argparse.REMAINDER)
    return skeleton.parse_known_args(argv)[0].command


def _main(argv):
    paper = _command_of(sys.argv[1:] if argv is None else argv) == "reproduce"
    try:
        parser = build_parser(paper=paper)
    except peers.PeerModuleError as error:
        print(f"mtrl-fast: error: {error}", file=sys.stderr)
        return 2
    if paper and _studies() is None:  # the study options are unknown here: reproduce names the extra
        args, _ = parser.parse_known_args(argv)
    else:
        args = parser.parse_args(argv)
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
