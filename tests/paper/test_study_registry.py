"""A new study with a parameter is its module and one entry in ``STUDIES``: the grid's field, the
command's option, its check, the fingerprint and the report follow from the entry."""

import json
import subprocess
import sys
import textwrap

from mtrl_fast.paper import experiments
from mtrl_fast.paper.studies import STUDIES, Parameter, parameters_of

# A study module as a contributor would write it, registered by one line before the grid is derived.
NEW_STUDY = """
import sys
from mtrl_fast.paper.studies import STUDIES, Cell, Parameter, Study
from mtrl_fast.paper.studies._common import markdown_table


class Echo(Study):
    name = "echo"
    title = "records its parameter, scaled by the cell's d"
    fields = {"d": int, "seed": int, "value": int}
    finite = frozenset({"value"})
    parameters = (Parameter("echo_scale", "int", 3, "what each record multiplies d by", minimum=2),)

    def cells(self, grid):
        return [Cell(self.name, d, s) for d in grid.d for s in range(grid.seeds)]

    def records_per_cell(self, cell, grid):
        return 1

    def tasks(self, cell, grid):
        return 1

    def run(self, cell, grid, shard_options):
        return [{"d": cell.d, "seed": cell.repetition, "value": cell.d * grid.echo_scale}]

    def tables(self, records, grid):
        rows = [[r["d"], r["seed"], r["value"]] for r in records]
        return ["## Echo\\n\\n" + markdown_table(["d", "seed", "value"], rows)]


STUDIES["echo"] = Echo()  # the one entry (worker processes import this module too, and see it)

if __name__ == "__main__":
    from mtrl_fast import cli

    sys.exit(cli.main(sys.argv[1:]))
"""


def _run(tmp_path, *argv):
    script = tmp_path / "with_echo.py"
    script.write_text(textwrap.dedent(NEW_STUDY))
    return subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True, cwd=tmp_path)


def test_a_new_study_with_a_parameter_runs_from_the_command_line(tmp_path):
    out = tmp_path / "out"
    common = ["reproduce", "--out", str(out), "--d", "6,9", "--r", "2", "--seeds", "1", "--studies", "echo"]
    done = _run(tmp_path, *common, "--echo-scale", "7", "--no-progress")
    assert done.returncode == 0, done.stderr
    records = json.loads((out / "results.json").read_text())["echo"]
    assert sorted(r["value"] for r in records) == [42, 63]
    assert "## Echo" in (out / "report.md").read_text()
    assert json.loads((out / "results.json").read_text())["config"]["echo_scale"] == 7
    # The option's help, its check (the declared minimum, one line, exit 2), and the fingerprint.
    helped = _run(tmp_path, "reproduce", "--help")
    assert "--echo-scale" in helped.stdout and "what each record multiplies d by" in helped.stdout
    assert "echo" in helped.stdout.split("--studies")[1]
    refused = _run(tmp_path, *common, "--echo-scale", "1", "--out", str(tmp_path / "other"))
    assert refused.returncode == 2 and "echo_scale values must be at least 2" in refused.stderr
    cell = json.loads(next((out / "cells").glob("echo-*.json")).read_text())
    assert cell["settings"]["echo_scale"] == 7


def test_the_grid_and_the_options_come_from_the_registry():
    declared = parameters_of(STUDIES.values())
    assert [p.name for p in declared] == [p.name for p in experiments.PARAMETERS]
    grid_fields = set(experiments.Grid.__dataclass_fields__)
    assert {p.name for p in declared} <= grid_fields
    for parameter in declared:
        assert getattr(experiments.Grid(), parameter.name) == parameter.default
        assert parameter.name in experiments.Grid.__doc__


def test_a_parameter_checks_its_values():
    widths = Parameter("widths", "ints", (8,), "w", at_least_r=True)
    assert widths.problem((8, 16), r=5) is None
    assert "at least r = 5" in widths.problem((4,), r=5)
    assert widths.problem((), r=5) is None  # no cells of that kind
    assert "a tuple of integers" in widths.problem([8], r=5)
    assert "integers" in widths.problem((1.5,), r=1)
    assert "at least 3" in Parameter("p", "int", 3, "p", minimum=3).problem(2, r=1)


def test_coordinates_stay_out_of_the_fingerprint_and_settings_go_in():
    """A cell at d = 100 is the same cell whatever the other widths of the grid: ``widths`` and the
    ``d`` lists are coordinates; ``n_new`` and ``mechanism_points`` change what a cell records."""
    grid = experiments.QUICK
    cells = {cell.study: cell for cell in experiments.plan(grid)}
    probe = experiments.settings_of(cells["downstream"], grid)
    assert probe["n_new"] == list(grid.n_new) and "downstream_d" not in probe and "widths" not in probe
    assert experiments.settings_of(cells["mechanism"], grid)["mechanism_points"] == grid.mechanism_points
