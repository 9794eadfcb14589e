"""Stopping a real `mtrl-fast reproduce --jobs 2` run: signals to the command, a killed command,
a killed worker. Each test starts the installed command in a process of its own."""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

# Real runs stopped by real signals: tens of seconds in all, so they run in the slow step.
pytestmark = [pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"), pytest.mark.slow]

# Cells of a few seconds each, so that a signal lands mid-run.
GRID = [
    "--d",
    "300",
    "--tasks",
    "50,100,150",
    "--seeds",
    "2",
    "--width",
    "1024",
    "--downstream-d",
    "20",
    "--n-new",
    "5",
    "--downstream-tasks",
    "2",
    "--jobs",
    "2",
]


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except OSError:
        return False


def _processes():
    """``(pid, fields)`` of every process, ``fields`` its stat after the name: state, parent,
    process group, session, ..."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                yield int(entry.name), (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue


def _children(pid):
    return [child for child, fields in _processes() if int(fields[1]) == pid]


def _command_line(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    except OSError:
        return ""


def _start(out):
    command = [sys.executable, "-m", "mtrl_fast", "reproduce", "--out", str(out), *GRID]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tempfile.gettempdir(),
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    workers = []
    while time.monotonic() < deadline and process.poll() is None:
        # The two worker processes (the command's other child is multiprocessing's resource tracker).
        workers = [pid for pid in _children(process.pid) if "spawn_main" in _command_line(pid)]
        if len(workers) >= 2 and list((out / "cells").glob("*.json")):
            break
        time.sleep(0.2)
    assert process.poll() is None and len(workers) >= 2, "the run did not get going"
    return process, workers


def _wait_gone(pids, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    return [pid for pid in pids if _alive(pid)]


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_run_ends_its_workers_and_it_resumes(tmp_path, signum, code):
    out = tmp_path / "out"
    process, workers = _start(out)
    os.killpg(process.pid, signum) if signum == signal.SIGINT else process.send_signal(signum)  # Ctrl-C: the group
    start = time.monotonic()
    _, err = process.communicate(timeout=30)
    assert time.monotonic() - start < 10
    assert process.returncode == code, err
    assert f"stopped by {signal.Signals(signum).name}" in err and "run the same command to resume" in err
    assert "Traceback" not in err
    assert _wait_gone(workers, 5) == []
    assert not list(out.glob("**/.*.tmp"))
    finished = len(list((out / "cells").glob("*.json")))
    resumed = subprocess.run(
        [sys.executable, "-m", "mtrl_fast", "reproduce", "--out", str(out), *GRID],
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"{finished} already done" in resumed.stderr


def test_workers_exit_when_the_command_is_killed(tmp_path):
    process, workers = _start(tmp_path / "out")
    process.kill()
    process.communicate(timeout=30)
    assert _wait_gone(workers, 10) == [], "workers outlived the killed command"


def test_a_killed_worker_stops_the_run_with_a_message(tmp_path):
    process, workers = _start(tmp_path / "out")
    os.kill(workers[0], signal.SIGKILL)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "a worker process died" in err and "run the same command again to resume" in err
    assert "Traceback" not in err
    assert _wait_gone(workers, 5) == []


# A run stopped at a chosen moment: a driver runs the command in its own process and sends itself
# SIGTERM exactly there (the moment a worker has been spawned but not yet handed its start-up data;
# while the cells run; as a result is handed back; as the outputs are written; once the run returned).
DRIVER = r"""
import concurrent.futures, multiprocessing.util, os, signal, sys
from mtrl_fast import cli
from mtrl_fast.paper import experiments, report

phase, out = sys.argv[1], sys.argv[2]
grid = sys.argv[3:]

def stop():
    os.kill(os.getpid(), signal.SIGTERM)

def after(function, when=lambda *args: True):
    def wrapped(*args, **kwargs):
        result = function(*args, **kwargs)
        if when(*args):
            stop()
        return result
    return wrapped

if phase == "pool start-up":
    spawned = multiprocessing.util.spawnv_passfds
    def is_worker(path, args, fds):
        return any(b"spawn_main" in (a if isinstance(a, bytes) else a.encode()) for a in args)
    multiprocessing.util.spawnv_passfds = after(spawned, is_worker)
elif phase == "a cell running":
    waiting = concurrent.futures.as_completed
    def as_completed(futures, timeout=None):
        stop()
        yield from waiting(futures, timeout)
    concurrent.futures.as_completed = as_completed
    import mtrl_fast.paper.engines as engines
    engines.as_completed = as_completed
elif phase == "a result handed back":
    concurrent.futures.Future.result = after(concurrent.futures.Future.result)
elif phase == "the final writes":
    writing = report.write_outputs
    def write_outputs(*args, **kwargs):
        stop()  # handled at the next instruction: inside the writes
        return writing(*args, **kwargs)
    report.write_outputs = write_outputs
elif phase == "after the run":
    experiments.reproduce = after(experiments.reproduce)
sys.exit(cli.main(["reproduce", "--out", out, "--no-progress", *grid]))
"""
PHASES = ["pool start-up", "a cell running", "a result handed back", "the final writes", "after the run"]
SMALL_GRID = [
    "--d",
    "20,40",
    "--tasks",
    "1,5,20",
    "--seeds",
    "2",
    "--downstream-d",
    "20",
    "--n-new",
    "5",
    "--width",
    "16",
    "--jobs",
    "2",
]


def _session_members(sid):
    """The live processes of session ``sid`` (a zombie has exited)."""
    return [pid for pid, fields in _processes() if int(fields[3]) == sid and fields[0] != "Z"]


@pytest.mark.parametrize("phase", PHASES)
def test_a_stop_at_any_phase_of_a_pooled_run_is_clean(tmp_path, phase):
    """Before: a SIGTERM while the pool started a worker left the child with its start-up data cut
    short, and it printed ``EOFError: Ran out of input`` after the stop message."""
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-c", DRIVER, phase, str(out), *SMALL_GRID],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tempfile.gettempdir(),
        start_new_session=True,
    )
    _, err = process.communicate(timeout=300)
    assert process.returncode == 143, err
    assert "stopped by SIGTERM" in err and "Traceback" not in err, err
    deadline = time.monotonic() + 10
    while _session_members(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _session_members(process.pid) == [], "processes of the run outlived it"
    assert not list(tmp_path.glob("**/.*.tmp"))
