"""Studies own their experiments: the width study end to end, its claim, and a study of a test's
own running through the same orchestration and report with one registration."""

import json
from dataclasses import replace

import pytest
from test_experiments import TINY

from mtrl_fast.paper import report, studies
from mtrl_fast.paper.experiments import Grid, load_cell, plan, reproduce
from mtrl_fast.paper.studies import STUDIES, Cell, Study
from mtrl_fast.paper.studies.width import SAME_CURVE

WIDTHS = replace(TINY, studies=("width",), widths=(2, 4, 12), width_d=(8, 30))


def test_the_width_study_writes_its_records_claim_table_and_figure(tmp_path):
    rows = reproduce(WIDTHS, tmp_path, progress=False)
    cells = plan(WIDTHS)
    assert {c.study for c in cells} == {"width"} and len(cells) == 2 * 3 * 2
    assert [c.name for c in cells][:2] == ["width-d8-m2-seed0", "width-d8-m2-seed1"]
    document = json.loads((tmp_path / "results.json").read_text())
    assert set(document) == {"config", "width", "claims", "profile"}
    assert len(document["width"]) == 2 * 3 * 2 * len(TINY.n_new) * 2
    assert {r["features"] for r in document["width"]} == {"multi-task", "random"}
    assert (tmp_path / "width.csv").read_text().splitlines()[0] == "d,width,n_new,features,seed,accuracy"
    text = (tmp_path / "report.md").read_text()
    assert "## Downstream accuracy against the width" in text and "![width.png](width.png)" in text
    assert (tmp_path / "width.png").is_file() and not (tmp_path / "recovery.csv").exists()
    (claim,) = rows
    assert "do not grow with d" in claim["claim"] and isinstance(claim["holds"], bool)
    assert claim["measured"].startswith("accuracy change at m = 2: ")
    for cell in cells:  # stored with the width's own pretraining, loaded back
        assert load_cell(tmp_path, cell, WIDTHS) is not None


def _width_records(accuracy):
    """Multi-task accuracy ``accuracy[d][m]`` at every n_new, random features at 0.5."""
    return [
        {
            "d": d,
            "width": m,
            "n_new": n,
            "features": name,
            "seed": 0,
            "accuracy": value if name == "multi-task" else 0.5,
        }
        for d, by_width in accuracy.items()
        for m, value in by_width.items()
        for n in TINY.n_new
        for name in ("multi-task", "random")
    ]


@pytest.mark.parametrize(
    "low, high, holds",
    [
        ({8: 0.80, 16: 0.89, 32: 0.90}, {8: 0.805 - SAME_CURVE, 16: 0.89, 32: 0.91}, True),  # the same curve
        ({8: 0.89, 16: 0.90, 32: 0.90}, {8: 0.80, 16: 0.89, 32: 0.90}, False),  # d = 1000 needs more neurons
        ({8: 0.80, 16: 0.85, 32: 0.90}, {8: 0.80, 16: 0.85, 32: 0.90 + SAME_CURVE + 0.01}, False),  # either way
    ],
)
def test_the_width_claim_needs_the_same_curve_at_every_d(low, high, holds):
    grid = replace(WIDTHS, widths=(8, 16, 32), width_d=(100, 1000))
    (row,) = report.claims({"width": _width_records({100: low, 1000: high})}, grid)
    assert row["holds"] is holds, row


class Constant(Study):
    """A study of the test's own: one record per (d, seed), its value the seed."""

    name = "constant"
    fields = {"d": int, "seed": int, "value": float}
    finite = frozenset({"value"})

    def cells(self, grid):
        return [Cell(self.name, d, s) for d in grid.d for s in range(grid.seeds)]

    def run(self, cell, grid, shard_options):
        return [{"d": cell.d, "seed": cell.repetition, "value": float(cell.repetition)}]

    def records_per_cell(self, cell, grid):
        return 1

    def tasks(self, cell, grid):
        return 1

    def claims(self, records, grid):
        return [{"claim": "values are seeds", "measured": str(len(records)), "threshold": "-", "holds": True}]

    def tables(self, records, grid):
        return [f"## Constant\n\n{len(records)} records"]


def test_a_new_study_is_its_class_and_one_registration(tmp_path, monkeypatch):
    monkeypatch.setitem(STUDIES, "constant", Constant())
    grid = replace(TINY, studies=("constant", "recovery"))
    rows = reproduce(grid, tmp_path, progress=False)
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["constant"] == [{"d": d, "seed": s, "value": float(s)} for d in TINY.d for s in range(2)]
    assert rows[0]["claim"] == "values are seeds" and len(rows) > 1
    assert "## Constant\n\n4 records" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "constant.csv").read_text().startswith("d,seed,value\n")


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"studies": ("recovery", "contrastive")}, "studies must be distinct names"),
        ({"mechanism_points": 2}, "mechanism_points values must be at least 3"),
        ({"studies": ()}, "studies must be distinct names"),
        ({"studies": ("recovery", "recovery")}, "studies must be distinct names"),
        ({"studies": ("width",), "widths": (1, 8)}, "every value of widths must be at least r"),
        ({"studies": ("width",), "width_d": (1,)}, "every value of width_d must be at least r"),
        ({"downstream_d": (1,)}, "every value of downstream_d must be at least r"),
        ({"n_new": (1, 10)}, "n_new values must be at least 2"),
        ({"n_new": [10]}, "n_new must be a tuple of integers"),
    ],
)
def test_grid_studies_are_checked(changes, words):
    with pytest.raises(ValueError, match=words):
        replace(Grid(), **changes)


def test_a_studys_r_rules_bind_only_when_it_runs():
    """The width study's dimensions need not be at least r in a run without it."""
    assert replace(Grid(), width_d=(1,)).width_d == (1,)


def test_every_registered_study_has_a_schema_and_a_title():
    for name, study in studies.STUDIES.items():
        assert study.name == name and study.fields and study.title
