"""Fixtures and settings for every test: hypothesis profiles, layouts, dtypes, parallel passes."""

import os

import numpy as np
import pytest
from hypothesis import settings

from mtrl_fast import LAYOUTS, _runtime

# Hypothesis profiles: "dev" explores new examples each run; "ci" (when CI is set) runs a fixed
# set, so that a red run is reproducible; "thorough" is for a long hunt
# (HYPOTHESIS_PROFILE=thorough).
settings.register_profile("dev", max_examples=60, deadline=None)
settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True, print_blob=True)
settings.register_profile("thorough", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def pytest_sessionstart(session):
    """Compile every kernel build into Numba's disk cache before the first test, on every core at
    once (one kernel per process at a time): the tests, and the processes they start (pytest-xdist's
    workers too), then load them from the cache instead of compiling them one after the other as
    each is first called."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return  # pytest-xdist's controller compiled them before it started its workers
    from mtrl_fast._kernels import _compile

    _compile.precompile(_compile.builds())


@pytest.fixture(autouse=True)
def parallel_kernels_at_every_size(monkeypatch):
    """Run the parallel passes even on the tests' small problems, which the library itself would
    run on one thread (``_runtime.PARALLEL_MIN_WORK``), so that the tests exercise the chunked
    code; ``test_threads`` checks that both paths agree bitwise."""
    monkeypatch.setattr(_runtime, "PARALLEL_MIN_WORK", 0)


@pytest.fixture(params=LAYOUTS)
def layout(request):
    return request.param


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param
