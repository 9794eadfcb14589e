"""The asv suite measures any release: it imports nothing of the package at the top of its modules
(discovery imports every file against whichever version is installed), and what a version lacks
becomes asv's skip, ``NotImplementedError``, never an error."""

import ast
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SUITE = Path(__file__).parents[2] / "benchmarks" / "asv"
pytestmark = pytest.mark.skipif(not SUITE.is_dir(), reason="the benchmark suite is not beside these tests")


def _common():
    spec = importlib.util.spec_from_file_location("asv_suite_common", SUITE / "common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", sorted(SUITE.glob("*.py")), ids=lambda p: p.name)
def test_no_module_of_the_suite_imports_the_package_at_its_top(path):
    top = [node for node in ast.parse(path.read_text()).body if isinstance(node, (ast.Import, ast.ImportFrom))]
    names = [alias.name for node in top if isinstance(node, ast.Import) for alias in node.names]
    names += [node.module or "" for node in top if isinstance(node, ast.ImportFrom)]
    assert not [name for name in names if name.startswith("mtrl_fast")], names


def test_what_a_version_lacks_is_a_skip(monkeypatch):
    common = _common()
    import mtrl_fast

    assert common.public("loss_and_grad") is mtrl_fast.loss_and_grad
    assert common.public("reference").__name__ == "mtrl_fast.reference"
    monkeypatch.delattr(mtrl_fast, "alternating_round")  # as in 0.1.0
    with pytest.raises(NotImplementedError, match="alternating_round"):
        common.public("alternating_round")
    monkeypatch.setitem(sys.modules, "mtrl_fast.bench.torch_step", None)  # a harness this version lacks
    with pytest.raises(NotImplementedError, match="torch_step"):
        common.public("torch_step", "mtrl_fast.bench")


@pytest.mark.parametrize("layout", ["shared", "per-task"])
def test_the_suites_products_are_the_steps(layout, monkeypatch):
    """``common.products`` runs the products a step runs: the same operand shapes as the step records."""
    common = _common()
    from mtrl_fast import ops

    X, Y, W, b, A = common.inputs(layout, 64, 16, 8, 6)
    with ops.record_products() as recorded:
        ops.loss_and_grad(X, Y, W, b, A)
    shapes = sorted((left.shape, right.shape) for left, right in recorded)
    seen = []
    real = np.matmul
    monkeypatch.setattr(
        np, "matmul", lambda left, right, out=None: seen.append((left.shape, right.shape)) or real(left, right, out=out)
    )
    common.products(X, Y, W, b, A)()
    assert sorted(seen) == shapes
