"""One home for every measured number: each number the README's "Measured" table quotes is in
docs/performance.md, which gives its machine, date and command; the README quotes, never measures."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"(?<![\w.^])\d+(?:\.\d+)?")  # with its unit after it: "8.6" in "8.6 s", "0.83" in "0.83x"


def measured_rows(readme):
    """``(what, result)`` of each row of the README's "Measured" table."""
    section = readme.split("\n## Measured\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| what |")]
    return [tuple(cell.strip() for cell in row.strip("|").split(" | ")) for row in rows]


def numbers(text):
    return set(NUMBER.findall(text))


def test_every_number_the_readme_quotes_is_in_the_performance_page():
    rows = measured_rows((ROOT / "README.md").read_text(encoding="utf-8"))
    performance = numbers((ROOT / "docs" / "performance.md").read_text(encoding="utf-8"))
    assert len(rows) >= 5
    missing = {what: sorted(numbers(result) - performance) for what, result in rows if numbers(result) - performance}
    assert not missing, f"README quotes numbers docs/performance.md does not have: {missing}"


def test_the_check_sees_a_number_that_is_not_there():
    readme = "# x\n\n## Measured\n\n| what | result |\n|---|---|\n| a cell | 8.61 s, 16.8 s |\n"
    ((what, result),) = measured_rows(readme)
    assert numbers(result) == {"8.61", "16.8"}
    assert numbers(result) - numbers("16.8 s and 8.6 s") == {"8.61"}
