"""The phase diagram: where recovery succeeds over T and the samples per task, its boundary, and the
claim that the boundary does not move with d."""

import json
from dataclasses import replace

import pytest
from test_experiments import TINY

from mtrl_fast.paper.experiments import load_cell, plan, reproduce
from mtrl_fast.paper.studies import STUDIES
from mtrl_fast.paper.studies.phase import SUCCESS
from mtrl_fast.paper.train import PretrainConfig

PHASE = STUDIES["phase"]
SMALL = replace(
    TINY,
    studies=("phase",),
    seeds=1,
    phase_d=(20, 40),
    phase_r=(2,),
    phase_tasks=(1, 4, 16),
    phase_samples=(50, 300),
    pretrain=PretrainConfig(width=16),
)


def test_the_phase_study_writes_its_records_claim_tables_and_figure(tmp_path):
    rows = reproduce(SMALL, tmp_path, progress=False)
    cells = plan(SMALL)
    assert [c.name for c in cells] == ["phase-d20-seed0", "phase-d40-seed0"]
    records = json.loads((tmp_path / "results.json").read_text())["phase"]
    assert len(records) == 2 * 1 * 3 * 2
    assert {(r["T"], r["n"]) for r in records} == {(T, n) for T in (1, 4, 16) for n in (50, 300)}
    assert all(0 <= r["subspace_distance"] <= 1 for r in records)
    text = (tmp_path / "report.md").read_text()
    assert "## Phase diagram, d = 20, r = 2" in text and "![phase.png](phase.png)" in text
    assert (tmp_path / "phase.png").is_file()
    (claim,) = rows
    assert "does not move with d" in claim["claim"] and isinstance(claim["holds"], bool)
    for cell in cells:
        assert load_cell(tmp_path, cell, SMALL) is not None


def _records(distance):
    """Records of a grid whose mean distance is ``distance(d, T, n)``."""
    return [
        {"d": d, "r": 2, "T": T, "n": n, "seed": 0, "subspace_distance": distance(d, T, n)}
        for d in SMALL.phase_d
        for T in SMALL.phase_tasks
        for n in SMALL.phase_samples
    ]


@pytest.mark.parametrize(
    "shift, holds", [(0, True), (1, True), (2, False)], ids=["the same", "one step apart", "two steps apart"]
)
def test_the_claim_asks_the_boundary_to_stay_within_one_step(shift, holds):
    # The boundary as an index into T = 1, 4, 16: at d = 20, n = 50% of d needs T = 4 and 300% T = 1;
    # at d = 40 the same, ``shift`` steps later (past the grid: never recovered).
    first = {50: 1, 300: 0}

    def distance(d, T, n):
        index = first[n] + (shift if d == 40 else 0)
        return 0.1 if SMALL.phase_tasks.index(T) >= index else 0.9

    claim = PHASE.claims(_records(distance), SMALL)[0]
    assert claim["holds"] is holds, claim


def test_the_boundary_and_its_slope():
    records = _records(lambda d, T, n: 0.1 if T * n >= 1200 else 0.9)
    boundary = PHASE.boundary(records, SMALL, 20, 2)
    assert boundary == {50: None, 300: 4}
    assert PHASE.slope({50: 16, 300: 4, 500: None}) == pytest.approx(-0.774, abs=1e-3)
    assert PHASE.slope({50: None, 300: 4}) != PHASE.slope({50: None, 300: 4})  # NaN: one point
    assert SUCCESS == 0.3


def test_one_d_cannot_evaluate_the_claim():
    claim = PHASE.claims([], replace(SMALL, phase_d=(20,)))[0]
    assert claim["holds"] is None and "needs two d" in claim["measured"]


def test_a_subspace_larger_than_a_d_is_refused_before_any_work():
    with pytest.raises(ValueError, match="every phase_r must be at most each phase_d and the width; got r = 30"):
        replace(SMALL, phase_r=(2, 30))


def test_the_warm_up_cell_runs_beside_the_phase_diagram():
    """The warm-up's tiny recovery cell (width 2) is checked by the recovery study's rules alone: a
    grid with the phase diagram (r up to 5) warmed up without an error."""
    from mtrl_fast.paper.experiments import warm_up

    warm_up(replace(SMALL, phase_r=(2, 5)), tiny_cell=True)
