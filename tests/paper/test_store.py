"""The output folder: atomic files, all-or-nothing outputs, a lock, and cells trusted only when valid."""

import dataclasses
import errno
import json
import os

import pytest
from test_experiments import TINY

from mtrl_fast.paper import report, store
from mtrl_fast.paper.experiments import Cell, fingerprint, load_cell, plan, reproduce, run_grid


def test_atomic_write_replaces_whole_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "a.json"
    store.write_text_atomically(target, "old")

    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.Path, "write_text", disk_full)
    with pytest.raises(OSError):
        store.write_text_atomically(target, "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_outputs_are_all_or_nothing(tmp_path, monkeypatch):
    """A failure while writing the outputs (a full disk, say) leaves the previous complete set."""
    reproduce(TINY, tmp_path, progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and not p.name.startswith(".")}
    assert set(before) == {"results.json", "report.md", "claims.csv"} | {
        f"{study}.{kind}" for study in ("recovery", "downstream", "mechanism") for kind in ("csv", "png")
    }

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "_report", full_disk)  # after results, CSVs and figures were written
    changed = dataclasses.replace(TINY, noise=0.1)
    with pytest.raises(OSError):
        reproduce(changed, tmp_path, progress=False)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and not p.name.startswith(".")}
    assert after == before
    assert not list(tmp_path.glob("**/.*.tmp"))


def test_a_second_run_into_the_same_folder_is_refused(tmp_path):
    with store.locked(tmp_path):
        with pytest.raises(store.OutputLocked, match="in use by another mtrl-fast run.*choose another --out"):
            run_grid(TINY, tmp_path, progress=False)
    run_grid(TINY, tmp_path, progress=False)  # released with its holder


def test_temporary_files_of_a_killed_run_are_removed(tmp_path):
    cells = tmp_path / "cells"
    cells.mkdir()
    leftover = cells / ".recovery-d8-T1-seed0.json.4242.tmp"
    leftover.write_text('{"half": ')
    run_grid(TINY, tmp_path, progress=False)
    assert not leftover.exists()


@pytest.mark.parametrize(
    "content",
    [
        "[]",
        "null",
        "42",
        '"text"',
        "{}",
        "FINGERPRINT_ONLY",
        "EMPTY_RECORDS",
        "FOREIGN_RECORDS",
        "NAN_DISTANCE",
        "MISSING_FIELD",
        "WRONG_COUNT",
        "STRING_IN_NUMBER",
    ],
)
def test_malformed_cells_are_recomputed_with_a_warning(tmp_path, content):
    run_grid(TINY, tmp_path, progress=False)
    cell = plan(TINY)[0]
    path = tmp_path / "cells" / f"{cell.name}.json"
    good = json.loads(path.read_text())
    record = good["records"][0]
    other = Cell("recovery", cell.d + 4, cell.repetition, cell.T)
    texts = {
        "FINGERPRINT_ONLY": {"fingerprint": good["fingerprint"]},
        "EMPTY_RECORDS": dict(good, records=[]),
        "FOREIGN_RECORDS": dict(good, records=[dict(record, d=other.d)]),
        "NAN_DISTANCE": dict(good, records=[dict(record, subspace_distance=float("nan"))]),
        "MISSING_FIELD": dict(good, records=[{k: v for k, v in record.items() if k != "energy_outside"}]),
        "WRONG_COUNT": dict(good, records=[record, record]),
        "STRING_IN_NUMBER": dict(good, records=[dict(record, seed="0")]),
    }
    path.write_text(json.dumps(texts[content]) if content in texts else content)
    with pytest.warns(RuntimeWarning, match="recomputing the cell"):
        assert load_cell(tmp_path, cell, TINY) is None
    with pytest.warns(RuntimeWarning):
        again = run_grid(TINY, tmp_path, progress=False)
    assert json.loads(path.read_text())["records"] == good["records"]
    assert again == run_grid(TINY, tmp_path, progress=False)


def test_valid_cells_load_and_record_threads_and_blas(tmp_path):
    run_grid(TINY, tmp_path, progress=False, threads=1)
    for cell in plan(TINY):
        stored = json.loads((tmp_path / "cells" / f"{cell.name}.json").read_text())
        assert stored["threads"] == 1 and stored["blas"]
        assert stored["fingerprint"] == fingerprint(cell, TINY)
        assert load_cell(tmp_path, cell, TINY) == stored["records"]


def test_one_lock_covers_the_cells_and_the_report(tmp_path, monkeypatch):
    """Before: the lock was released between the cells and the report, and taken again."""
    taken = []
    real = store.locked

    def counting(folder):
        taken.append(folder)
        return real(folder)

    monkeypatch.setattr(store, "locked", counting)
    reproduce(TINY, tmp_path, progress=False)
    assert len(taken) == 1


@pytest.mark.parametrize("errno_value", [errno.ENOLCK, errno.EOPNOTSUPP])
def test_a_filesystem_that_cannot_lock_is_a_message(tmp_path, monkeypatch, errno_value):
    def refuse(handle, flags):
        raise OSError(errno_value, os.strerror(errno_value))

    monkeypatch.setattr(store.fcntl, "flock", refuse)
    with pytest.raises(store.OutputLocked, match="cannot lock .*file locks.*local disk"):
        with store.locked(tmp_path):
            pass


def test_a_failed_report_publishes_nothing_and_leaves_no_set(tmp_path):
    (tmp_path / "cells").mkdir()
    with store.locked(tmp_path), store.output_set(tmp_path) as stage:
        stage("a.txt").write_text("first")
    with pytest.raises(RuntimeError), store.locked(tmp_path), store.output_set(tmp_path) as stage:
        stage("a.txt").write_text("second")
        raise RuntimeError("disk full")
    assert (tmp_path / "a.txt").read_text() == "first"
    assert len(list((tmp_path / store.SETS).iterdir())) == 1
    with store.locked(tmp_path), store.output_set(tmp_path) as stage:
        stage("b.txt").write_text("only b")
    assert not (tmp_path / "a.txt").exists()  # not written by this run: no link left dangling
    assert (tmp_path / "b.txt").read_text() == "only b"
