"""Pretrained networks shared by the studies: one per (d, T, seed), trained once, the same bits
whoever trains it, loaded by every other cell that reads it."""

import json
from dataclasses import replace

import numpy as np
import pytest
from test_experiments import TINY

from mtrl_fast.paper import experiments, networks, store
from mtrl_fast.paper.experiments import run_grid
from mtrl_fast.paper.keys import CellKey
from mtrl_fast.paper.train import pretrain


def _distinct_networks(grid):
    """The (d, T, seed) networks the studies of ``grid`` read."""
    seeds = range(grid.seeds)
    wanted = {(d, T, s) for d in grid.d for T in grid.tasks for s in seeds}  # recovery, mechanism
    if "mechanism" in grid.studies:
        wanted |= {(d, 1, s) for d in grid.d for s in seeds}  # its single-task baseline
    if "downstream" in grid.studies:
        wanted |= {(d, T, s) for d in grid.downstream_d for T in (grid.downstream_tasks, 1) for s in seeds}
    return wanted


def _same(a, b):
    np.testing.assert_array_equal(a.W, b.W)
    np.testing.assert_array_equal(a.A, b.A)
    assert (a.b is None) == (b.b is None)
    if a.b is not None:
        np.testing.assert_array_equal(a.b, b.b)
    assert a.history == b.history


def test_a_kept_network_is_the_network_the_recovery_study_always_trained(tmp_path):
    """The recovery study's generator, salt 0, so that its records are what they were; kept and loaded
    bit for bit (history included, which the recovery records read)."""
    grid = replace(TINY, pretrain=replace(TINY.pretrain, bias=True))
    key = CellKey(grid.base_seed, 8, 1)
    direct = pretrain(networks.family(grid, key, 3), grid.pretrain, np.random.default_rng([grid.base_seed, 8, 1, 3, 0]))
    with networks.kept_in(tmp_path), networks.counting() as counts:
        first = networks.trained(grid, grid.pretrain, key, 3, {})
        again = networks.trained(grid, grid.pretrain, key, 3, {})
    assert counts == {"trained": 1, "reused": 1}
    _same(first, direct)
    _same(again, direct)
    assert again.b is not None and len(list(tmp_path.glob("*.npz"))) == 1
    with networks.counting() as counts:  # no folder: trained, nothing kept
        _same(networks.trained(grid, grid.pretrain, key, 3, {}), direct)
    assert counts == {"trained": 1, "reused": 0}


def test_the_name_changes_with_every_training_input():
    grid, config = TINY, TINY.pretrain

    def name(grid, config, d, T, repetition):
        return networks.name_of(grid, config, CellKey(grid.base_seed, d, repetition), T)

    base = name(grid, config, 8, 3, 0)
    assert name(grid, config, 8, 3, 0) == base
    changed = [
        name(grid, config, 12, 3, 0),
        name(grid, config, 8, 6, 0),
        name(grid, config, 8, 3, 1),
        name(replace(grid, base_seed=1), config, 8, 3, 0),
        name(replace(grid, r=3), config, 8, 3, 0),
        name(replace(grid, noise=0.1), config, 8, 3, 0),
        name(grid, replace(config, lr=config.lr * 2), 8, 3, 0),
        name(grid, replace(config, width=13), 8, 3, 0),
        name(grid, replace(config, dtype="float64"), 8, 3, 0),
    ]
    assert len(set(changed) | {base}) == len(changed) + 1


def test_a_file_that_is_not_a_network_is_trained_again(tmp_path):
    with networks.kept_in(tmp_path):
        want = networks.trained(TINY, TINY.pretrain, CellKey(TINY.base_seed, 8, 0), 1, {})
    (path,) = tmp_path.glob("*.npz")
    path.write_bytes(b"not a network")
    with networks.kept_in(tmp_path), networks.counting() as counts:
        _same(networks.trained(TINY, TINY.pretrain, CellKey(TINY.base_seed, 8, 0), 1, {}), want)
    assert counts == {"trained": 1, "reused": 0}
    np.load(path)  # written again, whole


@pytest.mark.parametrize(
    "studies, jobs",
    [(("recovery", "downstream", "mechanism"), 1), (("recovery", "downstream", "mechanism"), 2), (("mechanism",), 2)],
)
def test_a_default_run_trains_each_network_once(tmp_path, studies, jobs):
    """Recovery, downstream and mechanism read one network per (d, T, seed): in one process, and with
    two worker processes, where a cell waits for the process training the network it needs (the
    mechanism study alone starts with two cells that read the same single-task network at once)."""
    grid = replace(TINY, seeds=1, studies=studies)
    run_grid(grid, tmp_path, jobs=jobs, progress=False)
    cells = [json.loads(path.read_text()) for path in (tmp_path / "cells").glob("*.json")]
    trained = sum(cell["networks"]["trained"] for cell in cells)
    reused = sum(cell["networks"]["reused"] for cell in cells)
    wanted = _distinct_networks(grid)
    assert trained == len(wanted) == len(list((tmp_path / networks.FOLDER).glob("*.npz")))
    reads = sum(1 for cell in cells if cell["cell"]["study"] == "recovery")
    reads += sum(
        2 if cell["cell"]["study"] == "downstream" else 1 for cell in cells if cell["cell"]["study"] != "recovery"
    )
    assert trained + reused == reads


def test_records_do_not_depend_on_which_cell_trained_the_network(tmp_path):
    """A study run alone trains its own networks; in a full run it reads them: the same records."""
    grid = replace(TINY, seeds=1)
    full = run_grid(grid, tmp_path / "full", progress=False)
    alone = run_grid(replace(grid, studies=("mechanism",)), tmp_path / "alone", progress=False)
    assert alone["mechanism"] == full["mechanism"]


def test_a_killed_runs_temporary_network_is_cleaned_up(tmp_path):
    folder = tmp_path / networks.FOLDER
    folder.mkdir()
    leftover = folder / f".abc.npz.123{store.TEMPORARY_SUFFIX}"
    leftover.write_bytes(b"half")
    store.clean_up_after_killed_runs(tmp_path)
    assert not leftover.exists()


def test_cells_that_read_shared_networks_are_fingerprinted_as_such():
    """Cells stored before networks were shared are recomputed (their records changed); the recovery
    study's are kept (its records did not)."""
    settings = {name: experiments.settings_of(cell, TINY) for name, cell in _one_cell_each(TINY).items()}
    assert settings["mechanism"]["networks"] == settings["downstream"]["networks"] == networks.SHARED
    assert "networks" not in settings["recovery"] and "networks" not in settings.get("width", {})


def _one_cell_each(grid):
    return {cell.study: cell for cell in experiments.plan(grid)}
