"""Every Python example in the README runs as written, in order, in one namespace (a later block
may use an earlier one's arrays, as a reader would): an API change that breaks one fails here."""

import importlib.util
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
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


def test_every_readme_example_runs():
    namespace: dict = {"__name__": "readme"}
    ran = []
    for line, code in python_blocks(README.read_text(encoding="utf-8")):
        missing = [extra for module, extra in EXTRAS.items() if module in code and not importlib.util.find_spec(extra)]
        if missing:
            continue  # needs an extra this environment lacks; CI installs it
        exec(compile(code, f"{README.name}:{line}", "exec"), namespace)  # noqa: S102 - the examples are the test
        ran.append(line)
    assert ran, "no example ran"


def test_a_broken_example_fails_with_its_line():
    """The harness is not vacuous: a block that raises names the README line it came from."""
    text = "text\n\n```python\nimport mtrl_fast\nmtrl_fast.forward(1, 2, 3, 4)\n```\n"
    ((line, code),) = python_blocks(text)
    assert line == 4
    with pytest.raises((TypeError, ValueError)):
        exec(compile(code, f"README.md:{line}", "exec"), {})  # noqa: S102
