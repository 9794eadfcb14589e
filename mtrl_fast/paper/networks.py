"""Pretrained networks shared by the studies that read them: one per ``(d, T, seed)`` of a grid, trained
once.

The recovery study measures the network that multi-task pretraining on the first ``T`` tasks of
``(d, seed)`` learns; the mechanism study measures the same network's features, and the downstream
study probes it (and the single-task network, ``T = 1``). :func:`trained` gives that network to all of
them: trained from the cell key's network generator at ``T`` alone, and kept in the run's
``networks/`` folder under a key of everything its training depends on, so that a cell that needs a
network another cell trained loads it instead of training it again (a resumed run too).

Cells running at once in other processes wait for the process that is training a network rather than
train it twice (an ``flock`` on the network's file). A cell whose pretraining maps its shards onto a
cluster does not wait (its shards may need the very workers that wait) and trains the network itself
if no file holds it yet: the same bits, written atomically, so either copy serves. Without a folder
(a cell run on its own), the network is trained and nothing is kept.
"""

import fcntl
import hashlib
import io
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from . import store
from .keys import CellKey, Salt
from .shards import GROUP_TASKS, SLICE_VALUES
from .tasks import make_task_family
from .train import Pretrained, pretrain

#: How samples are drawn and task gradients summed; part of every network's key and every cell's
#: fingerprint, so that results from a release that did either differently (0.1.0: one stream per
#: cell; 0.2.0: NumPy generators per task, sums by shard, which depended on the memory budget) are
#: recomputed, not mixed in.
SAMPLING = "Philox4x32-10 Box-Muller, compiled (0.3.0)"
AGGREGATION = f"fixed groups of {GROUP_TASKS} tasks, rows in slices of {SLICE_VALUES} values (0.3.0)"
FOLDER = "networks"
#: Part of the fingerprint of every cell that reads a shared network (not the recovery study's, whose
#: records did not change): cells stored before networks were shared are recomputed.
SHARED = "one network per (d, T, seed), trained once"

_state = threading.local()


@contextmanager
def kept_in(folder: Path | None) -> Iterator[None]:
    """Keep (and look up) the networks trained in this thread's block in ``folder``; ``None``: keep none."""
    outer = getattr(_state, "folder", None)
    _state.folder = None if folder is None else Path(folder)
    try:
        yield
    finally:
        _state.folder = outer


def family(grid, key: CellKey, T: int):
    """The ground truth of ``key``'s ``(d, repetition)`` with ``T`` tasks: shared by every ``T``, study
    and width (task vectors are drawn after ``M``, row by row, so the first ``T`` tasks are the same for
    every ``T``)."""
    return make_task_family(key.d, grid.r, T, key.truth(), kind=grid.label_kind, noise=grid.noise)


def name_of(grid, config, key: CellKey, T: int) -> str:
    """A network's name: a hash of everything its training depends on."""
    inputs = {
        "d": key.d,
        "T": T,
        "seed": key.repetition,
        "r": grid.r,
        "label_kind": grid.label_kind,
        "noise": grid.noise,
        "base_seed": key.base_seed,
        "pretrain": config.to_dict(),
        "sampler": config.sampler_for(key.d, grid.r),
        "sampling": SAMPLING,
        "aggregation": AGGREGATION,
        "salt": int(Salt.NETWORK),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:20]


def _train(grid, config, key, T, shard_options) -> Pretrained:
    return pretrain(family(grid, key, T), config, key.generator(Salt.NETWORK, T), **shard_options)


def _path(folder: Path, name: str) -> Path:
    return folder / f"{name}.npz"


def _load(path: Path, width: int, d: int) -> Pretrained | None:
    """The network stored at ``path``, or ``None`` (none there, or a file that is not one: retrained)."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            W = stored["W"]
            b = stored["b"] if bool(stored["has_bias"]) else None
            A = stored["A"]
            history = json.loads(str(stored["history"]))
    except (OSError, KeyError, ValueError):
        return None
    if W.shape != (width, d) or (b is not None and b.shape != (width,)):
        return None
    _count("reused")
    return Pretrained(W=W, b=b, A=A, history=history)


def _save(path: Path, network: Pretrained) -> None:
    buffer = io.BytesIO()
    np.savez(
        buffer,
        W=network.W,
        b=np.zeros(0) if network.b is None else network.b,
        has_bias=network.b is not None,
        A=network.A,
        history=json.dumps(network.history),
    )
    store.write_bytes_atomically(path, buffer.getvalue())


def trained(grid, config, key: CellKey, T: int, shard_options) -> Pretrained:
    """The network pretrained with ``config`` on the first ``T`` tasks of ``key``'s ``(d, repetition)``:
    loaded from this thread's folder (:func:`kept_in`) when another cell trained it, else trained (and
    kept there)."""
    folder = getattr(_state, "folder", None)
    if folder is None:
        _count("trained")
        return _train(grid, config, key, T, shard_options)
    folder.mkdir(parents=True, exist_ok=True)
    name = name_of(grid, config, key, T)
    path = _path(folder, name)
    found = _load(path, config.width, key.d)
    if found is not None:
        return found
    waits = "map_shards" not in shard_options
    with open(folder / f".{name}.lock", "a+") as lock:
        if waits:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the holder is done, or dies
            found = _load(path, config.width, key.d)
            if found is not None:
                return found
        _count("trained")
        network = _train(grid, config, key, T, shard_options)
        _save(path, network)
    return network


# --- what a cell did: counted per thread, read by the cell's runner -------------------------------


def _count(what: str) -> None:
    counts = getattr(_state, "counts", None)
    if counts is not None:
        counts[what] += 1


@contextmanager
def counting() -> Iterator[dict[str, int]]:
    """Count the networks the block trains and reuses (in this thread): ``{"trained": k, "reused": j}``."""
    outer = getattr(_state, "counts", None)
    counts = {"trained": 0, "reused": 0}
    _state.counts = counts
    try:
        yield counts
    finally:
        _state.counts = outer
