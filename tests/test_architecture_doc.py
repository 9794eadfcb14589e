"""docs/architecture.md stays true: its layout names every module and benchmark there is, and every
file its table of common changes points to exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
LAYOUT = DOC.split("```", 2)[1]
CHANGES = DOC[DOC.index("| change | files |") :].split("\n\n", 1)[0]


def test_the_layout_names_every_module_of_the_package_and_every_benchmark():
    package = ROOT / "mtrl_fast"
    modules = {path.name for path in package.iterdir() if path.suffix == ".py" and path.name != "__main__.py"}
    modules |= {f"{path.name}/" for path in package.iterdir() if (path / "__init__.py").is_file()}
    benchmarks = {path.name for path in (ROOT / "benchmarks").glob("*.py")}
    assert [name for name in sorted(modules | benchmarks) if name not in LAYOUT] == []


def test_every_file_the_change_table_points_to_exists():
    named = set(re.findall(r"`([\w/]+\.(?:py|toml)|[\w/]+/)`", CHANGES))
    assert len(named) > 10  # the table was read
    missing = [
        path for path in sorted(named) if not (ROOT / "mtrl_fast" / path).exists() and not (ROOT / path).exists()
    ]
    assert missing == []


def test_the_check_finds_a_file_that_is_gone():
    assert not (ROOT / "mtrl_fast" / "bench" / "backends").exists()
    assert re.findall(r"`([\w/]+\.(?:py|toml)|[\w/]+/)`", "| a peer | `bench/backends/` |") == ["bench/backends/"]
