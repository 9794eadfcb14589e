"""Stopping a run while it writes its outputs: a SIGTERM at every step of the report leaves the
previous set of outputs whole or the new one, never a mix, and no temporary file; the run says it
was stopped. One interpreter runs the command again and again, each time with the signal sent at
a later step (the steps are the store's and the report's own functions, counted as they are called)."""

import json
import os
import shutil

import pytest

from helpers import run_python

pytestmark = pytest.mark.slow  # the command run again and again, a stop at each step: tens of seconds

GRID = [
    "--d",
    "8",
    "--r",
    "2",
    "--tasks",
    "1,3",
    "--seeds",
    "1",
    "--width",
    "8",
    "--downstream-d",
    "8",
    "--n-new",
    "4",
    "--downstream-tasks",
    "3",
    "--samples-per-task",
    "20",
    "--studies",
    "recovery,downstream",
    "--no-progress",
]
TEXT_OUTPUTS = ("results.json", "recovery.csv", "downstream.csv", "report.md")

STOPPER = """
    import contextlib, io, json, os, shutil, signal, sys
    from pathlib import Path
    from mtrl_fast import cli
    from mtrl_fast.paper import report, store

    steps = {"count": 0, "at": None}
    for module, name in ((store, "_sync"), (store, "_symlink_atomically"), (store, "_adopt_plain_files"),
                         (store, "_remove_unpublished_sets"), (store, "clean_up_after_killed_runs"),
                         (report, "_csv"), (report, "_figures"), (report, "_report")):
        def hooked(*args, _real=getattr(module, name), **kwargs):
            steps["count"] += 1
            if steps["count"] == steps["at"]:
                os.kill(os.getpid(), signal.SIGTERM)
            return _real(*args, **kwargs)
        setattr(module, name, hooked)

    pristine, work, options = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])

    def run(at):
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(pristine, work, symlinks=True)
        steps.update(count=0, at=at)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = cli.main(["reproduce", "--out", str(work), *options])
        return code, err.getvalue(), steps["count"]

    _, _, total = run(None)
    for at in range(1, total + 1):
        code, err, _ = run(at)
        outputs = {}
        for name in os.listdir(work):
            path = work / name
            if path.is_file() and not name.startswith("."):
                outputs[name] = path.read_text() if name.endswith((".json", ".csv", ".md")) else None
        leftovers = [str(p.relative_to(work)) for p in work.rglob(".*.tmp")]
        sets = sorted(os.listdir(work / store.SETS)) if (work / store.SETS).exists() else []
        print(json.dumps({"at": at, "code": code, "err": err, "outputs": outputs, "leftovers": leftovers,
                          "sets": sets}), flush=True)
    print(json.dumps({"total": total}))
"""


def _stable(name, text):
    """An output without what differs from run to run of the same grid: the time it was written
    and where the time went."""
    if text is None:
        return None
    if name == "results.json":
        document = json.loads(text)
        document.pop("profile", None)
        return json.dumps(document, sort_keys=True)
    if name == "report.md":
        text = text.split("## Where the time went")[0]
        return "\n".join(line for line in text.splitlines() if not line.startswith("Generated "))
    return text


def _cli(out, *options):
    found = run_python(
        f"import sys; from mtrl_fast import cli; sys.exit(cli.main({['reproduce', '--out', str(out), *options]!r}))"
    )
    assert found.returncode == 0, found.stderr
    return {name: _stable(name, (out / name).read_text()) for name in TEXT_OUTPUTS}


def _check_every_step(tmp_path, old_outputs, pristine):
    new = _cli(tmp_path / "new", *GRID, "--n-new", "5")
    assert new != old_outputs
    result = run_python(
        STOPPER.replace("sys.argv[1]", repr(str(pristine)))
        .replace("sys.argv[2]", repr(str(tmp_path / "work")))
        .replace("sys.argv[3]", repr(json.dumps([*GRID, "--n-new", "5"]))),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    total = lines[-1]["total"]
    assert total >= 15, total  # every file's flush and link, the pointer, the clean-ups, each part of the report
    seen = set()
    for step in lines[:-1]:
        assert step["code"] in (0, 143), step
        if step["code"] == 143:
            assert "stopped by SIGTERM" in step["err"] and "Traceback" not in step["err"], step
        assert step["leftovers"] == [], step
        assert len(step["sets"]) <= 1, step  # only the published set remains
        texts = {name: _stable(name, step["outputs"].get(name)) for name in TEXT_OUTPUTS}
        which = "old" if texts == old_outputs else "new" if texts == new else None
        assert which, f"a mix of two runs' outputs after a stop at step {step['at']}"
        assert {"recovery.png", "downstream.png"} <= set(step["outputs"]), step  # figures resolve too
        seen.add((step["code"], which))
    assert (143, "old") in seen  # stops before the switch kept the old set
    return seen


def test_a_stop_at_any_step_of_the_report_keeps_one_whole_set(tmp_path):
    pristine = tmp_path / "pristine"
    old = _cli(pristine, *GRID)
    _check_every_step(tmp_path, old, pristine)


def test_outputs_of_0_2_0_as_plain_files_are_adopted_without_a_mix(tmp_path):
    """A folder written before 0.3.0 holds its outputs as plain files: they become a set of their own."""
    pristine = tmp_path / "pristine"
    old = _cli(pristine, *GRID)
    for entry in list(pristine.iterdir()):
        if entry.is_symlink() and not entry.name.startswith("."):
            content = entry.read_bytes()
            entry.unlink()
            entry.write_bytes(content)
    shutil.rmtree(pristine / ".sets")
    os.unlink(pristine / ".current")
    _check_every_step(tmp_path, old, pristine)
