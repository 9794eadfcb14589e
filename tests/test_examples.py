"""Every Python example of the README and the docs runs as written, each page's in order in one
namespace (a later block may use an earlier one's arrays, as a reader would): an API change that
breaks one fails here."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = [page for page in PAGES if "```python" in page.read_text(encoding="utf-8")]
#: A block that imports one of these needs the extra of that name; it runs where it is installed.
EXTRAS = {"mtrl_fast.torch": "torch", "mtrl_fast.jax": "jax"}


def python_blocks(text):
    """``(line, code)`` of each fenced ``python`` block of a Markdown text."""
    return [
        (text[: match.start()].count("\n") + 2, match.group(1))
        for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    ]


def test_the_readme_has_examples_for_numpy_pytorch_and_jax():
    blocks = [code for _, code in python_blocks(README.read_text(encoding="utf-8"))]
    assert any("import mtrl_fast\n" in code for code in blocks)
    assert all(any(module in code for code in blocks) for module in EXTRAS)


@pytest.mark.parametrize("page", EXAMPLES, ids=lambda page: page.name)
def test_every_example_runs(page):
    namespace: dict = {"__name__": page.stem}
    blocks = python_blocks(page.read_text(encoding="utf-8"))
    ran = []
    for line, code in blocks:
        missing = [extra for module, extra in EXTRAS.items() if module in code and not importlib.util.find_spec(extra)]
        if missing:
            continue  # needs an extra this environment lacks; CI installs it
        exec(compile(code, f"{page.name}:{line}", "exec"), namespace)  # noqa: S102 - the examples are the test
        ran.append(line)
    assert ran, "no example ran"


def test_the_docs_pages_link_to_files_that_exist():
    """Every relative link of the README and the docs points to a file of the repository."""
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"


def test_a_broken_example_fails_with_its_line():
    """The harness is not vacuous: a block that raises names the README line it came from."""
    text = "text\n\n```python\nimport mtrl_fast\nmtrl_fast.forward(1, 2, 3, 4)\n```\n"
    ((line, code),) = python_blocks(text)
    assert line == 4
    with pytest.raises((TypeError, ValueError)):
        exec(compile(code, f"README.md:{line}", "exec"), {})  # noqa: S102
