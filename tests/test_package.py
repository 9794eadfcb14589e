"""What users install: the package the tests import, its top level, its metadata."""

import os
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import pytest

import mtrl_fast

CHECKOUT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    not os.environ.get("MTRL_FAST_TEST_INSTALLED"),
    reason="set MTRL_FAST_TEST_INSTALLED=1 when the tests run against an installed wheel (CI does)",
)
def test_tests_import_the_installed_package_not_the_checkout():
    package = Path(mtrl_fast.__file__).resolve().parent
    assert package != CHECKOUT / "mtrl_fast", f"mtrl_fast imported from the checkout: {package}"
    assert "site-packages" in package.parts, package


def test_one_version_and_typed():
    assert metadata.version("mtrl_fast") == mtrl_fast.__version__
    assert (Path(mtrl_fast.__file__).parent / "py.typed").is_file()


def test_import_loads_the_kernel_library_alone():
    """``import mtrl_fast`` brings neither the paper's code nor the benchmarks nor their extras."""
    code = (
        "import sys, mtrl_fast; print(' '.join(m for m in ('mtrl_fast.paper', 'mtrl_fast.bench', "
        "'mtrl_fast.cli', 'matplotlib', 'torch', 'jax', 'dask') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tempfile.gettempdir()
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_public_api_is_what_all_lists():
    for name in mtrl_fast.__all__:
        assert hasattr(mtrl_fast, name), name
    assert mtrl_fast.LAYOUTS == ("shared", "per-task")


def test_importing_compiles_nothing_and_a_run_compiles_only_its_dtype_and_twin():
    """A cold cache cost 7 s at import when the serial helpers compiled there; now nothing compiles
    before a kernel is called, and then only for the float type it is called with, and only the
    serial twin of each pass for a small problem (the parallel twin took three times as long)."""
    code = """
import numba, numpy as np, mtrl_fast
from mtrl_fast._kernels import _jit, _losses, _math, _passes, _random
dispatchers = [obj for module in (_losses, _math, _passes, _random) for obj in vars(module).values()
               if isinstance(obj, numba.core.registry.CPUDispatcher)]
passes = [obj for obj in vars(_passes).values() if isinstance(obj, _jit.Pass)]
kernels = [kernel for p in passes for kernel in (p.kernel, p.serial_kernel)]
print(sum(len(d.overloads) for d in dispatchers), sum(len(k._compiled) for k in kernels))
X, Y = np.ones((40, 6), np.float32), np.ones((3, 40), np.float32)
mtrl_fast.loss_and_grad(X, Y, np.ones((5, 6), np.float32), None, np.ones((3, 5), np.float32))
print(sorted({f for p in passes for f in p.serial_kernel._compiled}), [f for p in passes for f in p.kernel._compiled])
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tempfile.gettempdir()
    )
    assert result.returncode == 0, result.stderr
    before, after = result.stdout.strip().splitlines()
    assert before == "0 0"
    assert after == "['float32'] []"


def test_the_package_pins_no_dependency():
    """Extras state the oldest versions they need: ``mtrl_fast[torch]`` once pinned torch==2.13.0,
    which replaced a user's own PyTorch."""
    requirements = metadata.requires("mtrl_fast") or []
    assert requirements, "no Requires-Dist in the installed metadata"
    specifiers = [line.split(";")[0] for line in requirements]  # not the markers: extra == "torch"
    pinned = [spec for spec in specifiers if "==" in spec]
    assert pinned == [], pinned
    assert "torch>=2.4" in specifiers and "numba>=0.59" in specifiers
