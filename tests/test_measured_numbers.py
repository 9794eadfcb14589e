"""One home for every measured number: each row of the README's "Measured" table names a record of
docs/performance.md (an id, a date, a machine, a command, a result) and quotes only numbers of the
latest record of that id; the README quotes, never measures."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"(?<![\w.^])\d+(?:\.\d+)?")  # with its unit after it: "8.6" in "8.6 s", "0.83" in "0.83x"


def _table_rows(section, header):
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith(header)]
    return [tuple(cell.strip() for cell in row.strip().strip("|").split(" | ")) for row in rows]


def measured_rows(readme):
    """``(what, result, record id)`` of each row of the README's "Measured" table."""
    section = readme.split("\n## Measured\n", 1)[1].split("\n## ", 1)[0]
    return _table_rows(section, "| what |")


def records(performance):
    """``{id: (date, machine, command, result)}``: the latest record of each id in the "Records"
    table (by date; of two on one date, the later row)."""
    section = performance.split("\n## Records\n", 1)[1].split("\n## ", 1)[0]
    latest = {}
    for record_id, date, machine, command, result in _table_rows(section, "| id |"):
        if record_id not in latest or date >= latest[record_id][0]:
            latest[record_id] = (date, machine, command, result)
    return latest


def numbers(text):
    return set(NUMBER.findall(text))


def stale_quotes(readme, performance):
    """``{what: why}`` for each README row that names no record or quotes a number its latest record lacks."""
    latest = records(performance)
    problems = {}
    for what, result, record_id in measured_rows(readme):
        if record_id not in latest:
            problems[what] = f"no record {record_id!r}"
            continue
        missing = sorted(numbers(result) - numbers(latest[record_id][3]))
        if missing:
            problems[what] = f"{missing} not in the latest {record_id!r} record ({latest[record_id][0]})"
    return problems


def test_every_row_of_the_readme_quotes_the_latest_record_of_its_id():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    performance = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    assert len(measured_rows(readme)) >= 5
    assert not stale_quotes(readme, performance)


PAGE = """# p

## Records

| id | date | machine | command | result |
|---|---|---|---|---|
| torch | 2026-12-01 | A | `x` | 1.18-1.34x per task |
| torch | 2026-12-05 | A | `x` | 1.11-1.27x per task |
| grid | 2026-12-05 | A | `y` | 8.61 s |

## Later

1.18 and 1.34 appear here too.
"""


@pytest.mark.parametrize(
    "result, record_id, stale",
    [
        ("1.11-1.27x per task", "torch", False),
        ("1.18-1.34x per task", "torch", True),  # an older run's numbers, though they are on the page
        ("8.6 s", "grid", True),
        ("8.61 s", "nothing", True),
    ],
)
def test_the_check_refuses_a_number_the_latest_record_lacks(result, record_id, stale):
    readme = f"# x\n\n## Measured\n\n| what | result | record |\n|---|---|---|\n| a row | {result} | {record_id} |\n"
    assert bool(stale_quotes(readme, PAGE)) == stale
