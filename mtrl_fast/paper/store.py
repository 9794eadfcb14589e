"""The output folder of a reproduction run: finished cells, final outputs, one run at a time.

Nothing here is ever half-written: every file is written to a temporary file beside it, flushed
to disk and renamed into place, so a reader (or the next run, after a crash or a full disk) sees
the previous complete file or the new one. Temporary files are removed on every exit path, and
the ones a killed process left behind are removed by the next run. A stored cell is trusted only
when its content is well formed and matches its coordinates and settings; anything else is
recomputed, with a warning. A lock on the folder stops a second run from writing into it at the
same time.
"""
import fcntl
import json
import math
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

TEMPORARY_SUFFIX = ".tmp"


class OutputLocked(RuntimeError):
    """Another run holds the output folder."""


def _temporary_path(path):
    return path.with_name(f".{path.name}.{os.getpid()}{TEMPORARY_SUFFIX}")


def _sync_and_rename(temporary, path):
    with open(temporary, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)  # atomic within one filesystem


def write_text_atomically(path, text):
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never a part."""
    path = Path(path)
    temporary = _temporary_path(path)
    try:
        temporary.write_text(text, encoding="utf-8")
        _sync_and_rename(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


@contextmanager
def staged_files(folder):
    """Write a set of files, then move them all into ``folder`` only if every write succeeded.

    Yields ``stage(name) -> Path``: the temporary path to write ``name`` to. On a normal exit each
    staged file is flushed and renamed over its final name; on an error none is, and the
    previous set stays as it was.
    """
    folder = Path(folder)
    staged = {}

    def stage(name):
        staged[name] = _temporary_path(folder / name)
        return staged[name]

    try:
        yield stage
        for name, temporary in staged.items():
            _sync_and_rename(temporary, folder / name)
    finally:
        for temporary in staged.values():
            temporary.unlink(missing_ok=True)


def remove_temporary_files(folder):
    """Remove temporary files a killed run left in ``folder`` (call it while holding the lock)."""
    for leftover in Path(folder).glob(f".*{TEMPORARY_SUFFIX}"):
        leftover.unlink(missing_ok=True)


@contextmanager
def locked(folder):
    """Hold an exclusive lock on ``folder`` for the block; ``OutputLocked`` if another run has it.

    The lock is an ``flock`` on ``folder/.lock``, released by the kernel when its holder exits,
    however it exits: a killed run never leaves a stale lock.
    """
    folder = Path(folder)
    handle = open(folder / ".lock", "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise OutputLocked(f"{folder} is in use by another mtrl-fast run ({holder}); wait for it to finish "
                               "or choose another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield
    finally:
        handle.close()


# --- cells ---------------------------------------------------------------------------------------

#: Fields every record of a study must have, with their types; those marked finite must be.
RECORD_FIELDS = {
    "recovery": {"d": int, "r": int, "T": int, "seed": int, "subspace_distance": float, "energy_outside": float,
                 "final_loss": float},
    "downstream": {"d": int, "n_new": int, "features": str, "seed": int, "accuracy": float},
}
_FINITE = {"subspace_distance", "energy_outside", "accuracy"}


def _record_problem(record, study, coordinates):
    """Why ``record`` cannot be a record of the cell at ``coordinates``, or ``None``."""
    if not isinstance(record, dict):
        return f"a record is {type(record).__name__}, not an object"
    for name, kind in RECORD_FIELDS[study].items():
        value = record.get(name)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"field {name!r} is {value!r}"
        if name in _FINITE and not math.isfinite(value):
            return f"field {name!r} is not finite"
    for name, value in coordinates.items():
        if value is not None and record.get(name) != value:
            return f"record has {name} = {record.get(name)!r}, the cell {value!r}"
    return None


def check_cell(stored, cell, expected_fingerprint, expected_count):
    """The stored cell's records if they are what ``cell`` computes, else ``(None, reason)``."""
    if not isinstance(stored, dict):
        return None, f"content is {type(stored).__name__}, not an object"
    if not isinstance(stored.get("fingerprint"), str):
        return None, "no fingerprint"
    if stored["fingerprint"] != expected_fingerprint:
        return None, "settings changed"  # not a warning: the expected way to redo cells
    records = stored.get("records")
    if not isinstance(records, list) or len(records) != expected_count:
        return None, f"expected {expected_count} records, found {len(records) if isinstance(records, list) else records!r}"
    coordinates = {"d": cell.d, "seed": cell.seed, "T": cell.T}
    for record in records:
        problem = _record_problem(record, cell.study, coordinates)
        if problem:
            return None, problem
    return records, None


def load_cell(path, cell, expected_fingerprint, expected_count):
    """A finished cell's records, or ``None`` (missing, changed settings, or malformed: warned)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as error:
        warnings.warn(f"cannot read {path} ({error}); recomputing the cell", RuntimeWarning, stacklevel=2)
        return None
    try:
        stored = json.loads(text)
    except ValueError:
        warnings.warn(f"{path} is not valid JSON; recomputing the cell", RuntimeWarning, stacklevel=2)
        return None
    records, reason = check_cell(stored, cell, expected_fingerprint, expected_count)
    if records is None and reason != "settings changed":
        warnings.warn(f"{path}: {reason}; recomputing the cell", RuntimeWarning, stacklevel=2)
    return records
