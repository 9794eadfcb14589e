"""Compiling kernels ahead of their first call, in worker processes, into Numba's disk cache; and
timing each compilation.

A kernel compiles at its first call, for one float type and one twin (serial or parallel), and a
process that calls three kernels compiles them one after the other on one core. A run that knows
which kernels it will call (``mtrl_fast.paper``'s samplers say so) can have them compiled at once,
one worker process per kernel, while the other cores would sit idle; its own first calls then load
them from the disk cache. Compiled code is the same either way: a worker runs the same compilation
into the same cache.
"""

import collections
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from . import _passes, _sampler
from ._jit import FLOAT_TYPES, LazyKernel, Pass

#: Every kernel a step or a draw calls from Python, by name.
KERNELS: dict[str, Pass] = {
    name: obj for module in (_passes, _sampler) for name, obj in vars(module).items() if isinstance(obj, Pass)
}
TWINS = ("serial", "parallel")


class Build(NamedTuple):
    """One compilation: a kernel (a name in :data:`KERNELS`), its twin and a float type."""

    kernel: str
    twin: str
    float_type: str

    def lazy(self) -> LazyKernel:
        found = KERNELS[self.kernel]
        return found.serial_kernel if self.twin == "serial" else found.kernel

    def __str__(self) -> str:
        return f"{self.kernel}:{self.twin}:{self.float_type}"

    @classmethod
    def parse(cls, text: str) -> "Build":
        kernel, twin, float_type = text.split(":")
        if kernel not in KERNELS or twin not in TWINS or float_type not in FLOAT_TYPES:
            raise ValueError(f"no kernel build {text!r}")
        return cls(kernel, twin, float_type)


def builds(kernels: Iterable[str] | None = None, twins=TWINS, float_types=FLOAT_TYPES) -> list[Build]:
    """Every build of ``kernels`` (all of :data:`KERNELS` by default) in ``twins`` and ``float_types``."""
    return [Build(k, t, f) for k in (kernels or KERNELS) for t in twins for f in float_types]


def compile_here(wanted: Sequence[Build]) -> list[tuple[Build, float]]:
    """Compile (or load from the disk cache) each build in this process; its seconds, in order."""
    seconds = []
    for build in wanted:
        start = time.perf_counter()
        build.lazy().compile(build.float_type)
        seconds.append((build, time.perf_counter() - start))
    return seconds


def precompile(wanted: Iterable[Build], processes: int | None = None) -> list[Build]:
    """Compile the builds that Numba's disk cache lacks, on every core at once; returns the builds
    compiled.

    The builds go by group, one per kernel and twin (both float types together, since they share
    a cache index, which two processes would both rewrite), compiled by this process and up to
    ``processes - 1`` worker processes (default: one per other core), each taking the next group
    when it has finished one. A worker that fails compiles nothing more; its kernels then compile
    at their first call, as they would without this.
    """
    groups: dict[tuple[str, str], list[Build]] = {}
    for build in dict.fromkeys(wanted):
        if not build.lazy().on_disk():
            groups.setdefault((build.kernel, build.twin), []).append(build)
    # The groups wait in one queue, longest first by a rough cost (a parallel twin compiles about
    # three times as long as a serial one); this process and each worker take the next group as
    # they finish one, so that a wrong guess costs at most the last group.
    queue = collections.deque(sorted(groups.values(), key=_cost, reverse=True))
    if not queue:
        return []
    # This process takes the longest group before any worker starts: it pays no start-up.
    group = queue.popleft()
    done: list[Build] = []
    feeders = [
        threading.Thread(target=_feed, args=(queue, done), daemon=True)
        for _ in range(min(len(queue), max(1, processes or os.cpu_count() or 1) - 1))
    ]
    for feeder in feeders:
        feeder.start()
    while True:
        done.extend(build for build, _ in compile_here(group))
        try:
            group = queue.popleft()
        except IndexError:
            break
    for feeder in feeders:
        feeder.join()
    return done


def _cost(group: list[Build]) -> float:
    return len(group) * (3.0 if group[0].twin == "parallel" else 1.0)


_FEEDING_WORKER = """
import sys
from mtrl_fast._kernels import _compile
for line in sys.stdin:
    for build, seconds in _compile.compile_here([_compile.Build.parse(a) for a in line.split()]):
        print(build, f"{seconds:.3f}", flush=True)
    print("done", flush=True)
"""


def _worker(env: dict[str, str] | None = None, capture_errors: bool = False) -> subprocess.Popen[str]:
    """A process that compiles each line of builds it reads, printing each build and its seconds,
    then ``done`` (its errors captured only for ``communicate``: an unread pipe could fill)."""
    return subprocess.Popen(
        [sys.executable, "-c", _FEEDING_WORKER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if capture_errors else None,
        text=True,
        env=env,
    )


def _feed(queue: "collections.deque[list[Build]]", done: list[Build]) -> None:
    """Keep one worker process busy with groups from ``queue`` until it is empty (a thread of
    :func:`precompile`: it waits on the worker's pipe while this process compiles)."""
    worker = _worker()
    assert worker.stdin is not None and worker.stdout is not None
    try:
        while True:
            try:
                group = queue.popleft()
            except IndexError:
                break
            worker.stdin.write(" ".join(map(str, group)) + "\n")
            worker.stdin.flush()
            for line in worker.stdout:
                if line.strip() == "done":
                    break
                done.append(Build.parse(line.split()[0]))
            else:
                break  # the worker died: its kernels compile at their first call
    except OSError:
        pass  # the same
    finally:
        try:
            worker.stdin.close()
        except OSError:
            pass
        worker.wait()


def compile_times(wanted: Sequence[Build] | None = None) -> list[tuple[Build, float]]:
    """Seconds each build takes to compile with an empty cache: each kernel's builds in a fresh
    process of its own with a cache folder of its own, serial twin before parallel, float32 before
    float64 (the first build of a kernel also compiles the helpers it calls)."""
    wanted = list(wanted if wanted is not None else builds())
    by_kernel: dict[str, list[Build]] = {}
    for build in wanted:
        by_kernel.setdefault(build.kernel, []).append(build)
    times: list[tuple[Build, float]] = []
    for group in by_kernel.values():
        with tempfile.TemporaryDirectory(prefix="mtrl_fast-compile-") as cache:
            worker = _worker({**os.environ, "NUMBA_CACHE_DIR": cache}, capture_errors=True)
            out, err = worker.communicate(" ".join(map(str, group)) + "\n")
        if worker.returncode != 0:
            raise RuntimeError(f"compiling {group[0].kernel} failed: {err.strip()[-2000:]}")
        lines = [line.split() for line in out.splitlines() if line.strip() and line.strip() != "done"]
        times.extend((Build.parse(build), float(seconds)) for build, seconds in lines)
    return times
