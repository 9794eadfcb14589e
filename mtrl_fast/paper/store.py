"""The output folder of a reproduction run: finished cells, final outputs, one run at a time.

Nothing here is ever half-written. A cell's file is written to a temporary file beside it, flushed
to disk and renamed into place, so a reader (or the next run, after a crash or a full disk) sees
the previous complete file or the new one. The final outputs (results, CSVs, figures, report) are
a *set*: written into a fresh folder under ``.sets/``, then published at once by switching the
``.current`` pointer (a symlink, replaced atomically) to it; each output's name in the folder is
a fixed symlink through ``.current``, so a reader sees the previous set or the new one, never
files of two runs side by side. Temporary files and unpublished sets are removed on every exit
path, and those a killed process left behind by the next run. A stored cell is trusted only when
its content is well formed and matches its coordinates and settings; anything else is
recomputed, with a warning. A lock on the folder stops a second run from writing into it at the
same time.
"""

import fcntl
import json
import math
import os
import shutil
import signal
import tempfile
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

TEMPORARY_SUFFIX = ".tmp"


class OutputLocked(RuntimeError):
    """Another run holds the output folder, or the folder's filesystem cannot lock."""


class Stopped(KeyboardInterrupt):
    """The run was stopped by SIGINT or SIGTERM; every finished cell is stored."""


# --- stopping at a safe point --------------------------------------------------------------------

_deferring = threading.local()


@contextmanager
def stop_on_signals():
    """Turn SIGTERM (and SIGINT) into :class:`Stopped` in the main thread, so that cleanup runs;
    inside :func:`signals_deferred` the stop waits for the end of that block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(number, frame):
        name = signal.Signals(number).name
        if getattr(_deferring, "pending", None) is not None:
            _deferring.pending.append(name)
            return
        raise Stopped(name)

    previous = {number: signal.signal(number, stop) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextmanager
def signals_deferred():
    """A block that a signal does not cut short: a stop that arrives inside it is raised at its end."""
    outer = getattr(_deferring, "pending", None)
    _deferring.pending = [] if outer is None else outer
    try:
        yield
    finally:
        pending = _deferring.pending
        _deferring.pending = outer
    if outer is None and pending:
        raise Stopped(pending[0])


def _temporary_path(path):
    return path.with_name(f".{path.name}.{os.getpid()}{TEMPORARY_SUFFIX}")


def _sync(path):
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _sync_and_rename(temporary, path):
    _sync(temporary)
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


def write_bytes_atomically(path, data):
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part."""
    path = Path(path)
    temporary = _temporary_path(path)
    try:
        temporary.write_bytes(data)
        _sync_and_rename(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


SETS = ".sets"
CURRENT = ".current"


def _symlink_atomically(target, path):
    """Make ``path`` a symlink to ``target``, replacing what was there in one step."""
    temporary = _temporary_path(path)
    temporary.unlink(missing_ok=True)
    os.symlink(target, temporary)
    os.replace(temporary, path)


def _published(folder):
    """Names of the outputs published in ``folder``: its symlinks through ``.current``."""
    prefix = CURRENT + os.sep
    return {entry.name for entry in folder.iterdir() if entry.is_symlink() and os.readlink(entry).startswith(prefix)}


def _adopt_plain_files(folder, names):
    """Outputs written as plain files (before 0.3.0) become a published set of their own, each
    name switching to a symlink to the same content, so that no step shows a mix."""
    plain = [name for name in names if (folder / name).is_file() and not (folder / name).is_symlink()]
    if not plain or (folder / CURRENT).is_symlink():
        return
    legacy = Path(tempfile.mkdtemp(prefix="adopted-", dir=folder / SETS))
    for name in plain:
        os.link(folder / name, legacy / name)  # the same file, under the set's folder
    _symlink_atomically(os.path.join(SETS, legacy.name), folder / CURRENT)
    for name in plain:
        _symlink_atomically(os.path.join(CURRENT, name), folder / name)


def _remove_unpublished_sets(folder):
    """Remove every set but the published one: older sets, and those a killed run left unfinished."""
    sets = folder / SETS
    current = os.path.basename(os.readlink(folder / CURRENT)) if (folder / CURRENT).is_symlink() else None
    if sets.is_dir():
        for entry in sets.iterdir():
            if entry.name != current:
                shutil.rmtree(entry, ignore_errors=True)


@contextmanager
def output_set(folder):
    """Write a set of output files that replaces the folder's previous set all at once.

    Yields ``stage(name) -> Path``: where to write the output ``name``. On a normal exit the
    files are flushed and published together (see the module's docstring); on an error or a stop
    nothing is published, the unfinished set is removed, and the previous set stays as it was.
    Call it while holding :func:`locked`.
    """
    folder = Path(folder)
    (folder / SETS).mkdir(exist_ok=True)
    new = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=folder / SETS))
    names = []

    def stage(name):
        names.append(name)
        return new / name

    published = False
    try:
        yield stage
        for name in names:
            _sync(new / name)
        with signals_deferred():  # a stop here would leave the links half switched
            _adopt_plain_files(folder, names)
            _symlink_atomically(os.path.join(SETS, new.name), folder / CURRENT)
            published = True
            for name in names:
                link, path = os.path.join(CURRENT, name), folder / name
                if not (path.is_symlink() and os.readlink(path) == link):
                    _symlink_atomically(link, path)
            for name in _published(folder) - set(names):
                (folder / name).unlink()  # an output this run no longer writes would dangle
            _remove_unpublished_sets(folder)  # the previous set
    finally:
        if not published:
            shutil.rmtree(new, ignore_errors=True)


def remove_temporary_files(folder):
    """Remove temporary files a killed run left in ``folder`` (call it while holding the lock)."""
    for leftover in Path(folder).glob(f".*{TEMPORARY_SUFFIX}"):
        leftover.unlink(missing_ok=True)


def clean_up_after_killed_runs(out):
    """Remove what a killed run left in the output folder ``out``: temporary files, unpublished
    sets. Call it while holding :func:`locked`."""
    out = Path(out)
    remove_temporary_files(out)
    remove_temporary_files(out / "cells")
    remove_temporary_files(out / "networks")
    _remove_unpublished_sets(out)


@contextmanager
def locked(folder):
    """Hold an exclusive lock on ``folder`` for the block; ``OutputLocked`` if another run has it.

    The lock is an ``flock`` on ``folder/.lock``, released by the kernel when its holder exits,
    however it exits: a killed run never leaves a stale lock. It excludes runs on the same machine;
    across machines sharing a network filesystem it holds only where that filesystem carries
    ``flock`` (NFSv4 does; some mounts emulate it locally or refuse it, and a refusal is an
    ``OutputLocked`` that says so).
    """
    folder = Path(folder)
    handle = open(folder / ".lock", "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise OutputLocked(
                f"{folder} is in use by another mtrl-fast run ({holder}); wait for it to finish or choose another --out"
            ) from None
        except OSError as error:  # ENOLCK, EOPNOTSUPP: a filesystem that cannot lock
            raise OutputLocked(
                f"cannot lock {folder} ({error.strerror or error}): its filesystem does not support "
                "file locks (a network mount, say); choose an --out on a local disk"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield
    finally:
        handle.close()


# --- cells ---------------------------------------------------------------------------------------


def _record_problem(record, fields, finite, coordinates):
    """Why ``record`` cannot be a record of the cell at ``coordinates``, or ``None``: ``fields`` maps
    each field to its type, and those in ``finite`` must be finite (a study's schema)."""
    if not isinstance(record, dict):
        return f"a record is {type(record).__name__}, not an object"
    for name, kind in fields.items():
        value = record.get(name)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"field {name!r} is {value!r}"
        if name in finite and not math.isfinite(value):
            return f"field {name!r} is not finite"
    for name, value in coordinates.items():
        if value is not None and record.get(name) != value:
            return f"record has {name} = {record.get(name)!r}, the cell {value!r}"
    return None


def check_cell(stored, cell, expected_fingerprint, expected_count, fields, finite):
    """The stored cell's records if they are what ``cell`` computes, else ``(None, reason)``; each
    record has the study's ``fields`` (name -> type), those in ``finite`` finite."""
    if not isinstance(stored, dict):
        return None, f"content is {type(stored).__name__}, not an object"
    if not isinstance(stored.get("fingerprint"), str):
        return None, "no fingerprint"
    if stored["fingerprint"] != expected_fingerprint:
        return None, "settings changed"  # not a warning: the expected way to redo cells
    records = stored.get("records")
    if not isinstance(records, list) or len(records) != expected_count:
        return (
            None,
            f"expected {expected_count} records, found {len(records) if isinstance(records, list) else records!r}",
        )
    coordinates = {name: value for name, value in cell.stored().items() if name != "study"}
    for record in records:
        problem = _record_problem(record, fields, finite, coordinates)
        if problem:
            return None, problem
    return records, None


def load_cell(path, cell, expected_fingerprint, expected_count, fields, finite):
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
    records, reason = check_cell(stored, cell, expected_fingerprint, expected_count, fields, finite)
    if records is None and reason != "settings changed":
        warnings.warn(f"{path}: {reason}; recomputing the cell", RuntimeWarning, stacklevel=2)
    return records
