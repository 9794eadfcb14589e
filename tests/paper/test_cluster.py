"""The reproduction on a real local Dask cluster: a `dask scheduler` and `dask worker` processes,
bound to 127.0.0.1, started here; the command runs as users run it, in a process of its own."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("distributed")  # skip only when the extra itself is missing

pytestmark = pytest.mark.slow  # real schedulers and workers: tens of seconds in all

# Cells of a second or two, so that a kill lands mid-run.
GRID = [
    "--d",
    "100",
    "--tasks",
    "1,20,60,120",
    "--seeds",
    "2",
    "--width",
    "256",
    "--downstream-d",
    "30",
    "--n-new",
    "10",
    "--downstream-tasks",
    "4",
    "--studies",
    "recovery,downstream",
]


def _dask():
    found = Path(sys.executable).with_name("dask")
    return str(found) if found.exists() else shutil.which("dask")


def _environment(**changes):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}  # as a user's shell has it
    env.update(changes)
    return env


class Cluster:
    """A scheduler and ``workers`` single-threaded worker processes (no nanny: a killed worker stays dead)."""

    def __init__(self, folder, workers=2, worker_env=None):
        self.file = folder / "scheduler.json"
        self.processes = []
        self.scheduler = self._start(
            [
                _dask(),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--dashboard-address",
                "127.0.0.1:0",
                "--scheduler-file",
                str(self.file),
            ],
            folder / "scheduler.log",
            _environment(),
        )
        deadline = time.monotonic() + 60
        while not self.file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert self.file.exists(), (folder / "scheduler.log").read_text()
        self.address = json.loads(self.file.read_text())["address"]
        self.workers = [
            self._start(
                [
                    _dask(),
                    "worker",
                    "--scheduler-file",
                    str(self.file),
                    "--nthreads",
                    "1",
                    "--no-nanny",
                    "--host",
                    "127.0.0.1",
                    "--dashboard-address",
                    "127.0.0.1:0",
                    "--name",
                    f"worker-{i}",
                ],
                folder / f"worker-{i}.log",
                _environment(**(worker_env or {})),
            )
            for i in range(workers)
        ]
        from distributed import Client

        with Client(self.address, timeout=30) as client:
            client.wait_for_workers(workers, timeout=60)

    def _start(self, command, log, env):
        process = subprocess.Popen(
            command, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, cwd=tempfile.gettempdir()
        )
        self.processes.append(process)
        return process

    def stop(self):
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    started = Cluster(tmp_path_factory.mktemp("dask"))
    yield started
    started.stop()


def _reproduce(out, *options, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "mtrl_fast", "reproduce", "--out", str(out), "--no-progress", *GRID, *options],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tempfile.gettempdir(),
        env=_environment(),
        **kwargs,
    )


def _start_reproduce(out, scheduler):
    """The command started in the background against ``scheduler``, as ``_reproduce`` runs it."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mtrl_fast",
            "reproduce",
            "--out",
            str(out),
            "--no-progress",
            *GRID,
            "--scheduler",
            scheduler,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tempfile.gettempdir(),
        env=_environment(),
    )


def _records(out):
    document = json.loads((out / "results.json").read_text())
    return document["recovery"], document["downstream"]


@pytest.fixture(scope="module")
def local_records(tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    result = _reproduce(out, "--jobs", "1")
    assert result.returncode == 0, result.stderr
    return _records(out)


def test_the_grid_through_a_scheduler_gives_the_local_records(cluster, local_records, tmp_path):
    result = _reproduce(tmp_path, "--scheduler", cluster.address)
    assert result.returncode == 0, result.stderr
    assert _records(tmp_path) == local_records
    by_file = _reproduce(tmp_path / "again", "--scheduler-file", str(cluster.file))
    assert by_file.returncode == 0, by_file.stderr
    assert _records(tmp_path / "again") == local_records


def test_cells_sharded_across_the_workers_match_the_local_runs_bitwise(cluster, local_records, tmp_path):
    """A 2M budget cuts the larger cells' rounds into shards of one group of tasks: on the cluster the
    shards run on both workers (the scheduler's task stream says where), locally one after another;
    the sums, over the same groups in task order, equal the local runs', sharded or not."""
    from distributed import Client

    local = _reproduce(tmp_path / "local", "--jobs", "1", "--memory-budget", "2M")
    assert local.returncode == 0, local.stderr
    start = time.time_ns()
    spread = _reproduce(tmp_path / "spread", "--scheduler", cluster.address, "--memory-budget", "2M")
    assert spread.returncode == 0, spread.stderr
    assert _records(tmp_path / "spread") == _records(tmp_path / "local") == local_records
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test file
    with Client(cluster.address, timeout=30) as client:
        ran = client.run(_shards_run_here, start)
    assert len(ran) == 2 and all(len(keys) >= 4 for keys in ran.values()), ran


def test_reduced_sampler_shards_across_the_workers_match_the_local_run_bitwise(cluster, tmp_path):
    """The reduced sampler sums every shard's Gram matrix before drawing the rest of the gradient,
    once per round, in the client: its records do not depend on where the shards ran either."""
    options = ("--sampler", "reduced", "--width", "24", "--tasks", "1,60", "--memory-budget", "1M")
    local = _reproduce(tmp_path / "local", "--jobs", "1", *options)
    assert local.returncode == 0, local.stderr
    spread = _reproduce(tmp_path / "spread", "--scheduler", cluster.address, *options)
    assert spread.returncode == 0, spread.stderr
    assert _records(tmp_path / "spread") == _records(tmp_path / "local")
    assert "reduced sampler" in (tmp_path / "spread" / "report.md").read_text()


def _shards_run_here(since_ns, dask_worker):
    """On a worker: the keys of the shard tasks it ran, of runs started after ``since_ns``
    (shard keys are ``mtrl-fast-shard-{pid}-{time_ns}-{i}``)."""
    keys = {str(entry[0]) for entry in dask_worker.state.log}
    return sorted(key for key in keys if key.startswith("mtrl-fast-shard-") and int(key.split("-")[4]) > since_ns)


def test_a_killed_worker_costs_only_its_cell(local_records, tmp_path):
    own = Cluster(tmp_path)
    try:
        run = _start_reproduce(tmp_path / "out", own.address)
        deadline = time.monotonic() + 120
        while len(list((tmp_path / "out" / "cells").glob("*.json"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        own.workers[0].send_signal(signal.SIGKILL)  # mid-run: the scheduler reassigns its cell
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0, err
        cells = list((tmp_path / "out" / "cells").glob("*.json"))
        assert len(cells) == len({path.name for path in cells}) == 4 * 2 + 2  # every cell, once
        assert _records(tmp_path / "out") == local_records
    finally:
        own.stop()


def test_a_killed_client_resumes_without_recomputing(cluster, local_records, tmp_path):
    out = tmp_path / "out"
    run = _start_reproduce(out, cluster.address)
    deadline = time.monotonic() + 120
    while len(list((out / "cells").glob("*.json"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    run.kill()
    run.communicate(timeout=30)
    finished = {path.name: path.stat().st_mtime_ns for path in (out / "cells").glob("*.json")}
    assert 3 <= len(finished) < 10
    resumed = _reproduce(out, "--scheduler", cluster.address)
    assert resumed.returncode == 0, resumed.stderr
    # No finished cell was computed (and written) again.
    assert all((out / "cells" / name).stat().st_mtime_ns == stamp for name, stamp in finished.items())
    assert _records(out) == local_records


@pytest.mark.parametrize(
    "how", ["--scheduler tcp://127.0.0.1:9", "--scheduler not-an-address", "--scheduler-file {missing}"]
)
def test_a_bad_or_unreachable_scheduler_is_one_line_within_the_timeout_and_writes_nothing(how, tmp_path):
    options = how.format(missing=tmp_path / "missing.json").split()
    start = time.monotonic()
    result = _reproduce(tmp_path / "out", *options)
    assert time.monotonic() - start < 40
    assert result.returncode in (1, 2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and ("Dask scheduler" in lines[0] or "no such file" in lines[0]), result.stderr
    assert "--scheduler" in lines[0] or "cannot reach" in lines[0]
    assert not (tmp_path / "out").exists()


def test_a_worker_without_the_paper_extra_is_named_and_nothing_is_written(tmp_path):
    fake = tmp_path / "no-scipy"
    (fake / "scipy").mkdir(parents=True)
    (fake / "scipy" / "__init__.py").write_text("raise ImportError('No module named scipy')\n")
    broken = Cluster(tmp_path, workers=1, worker_env={"PYTHONPATH": str(fake)})
    try:
        result = _reproduce(tmp_path / "out", "--scheduler", broken.address)
    finally:
        broken.stop()
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot run the cells" in lines[0] and "mtrl_fast[paper]" in lines[0], result.stderr
    assert not (tmp_path / "out").exists()
