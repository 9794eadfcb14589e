"""pytest-benchmark: every installed backend on a few shapes, grouped by shape.

Not collected by the default test run (``testpaths = tests``). Run it with

    python -m pytest benchmarks/test_peers.py --benchmark-autosave
    python -m pytest benchmarks/test_peers.py --benchmark-compare --benchmark-compare-fail=median:10%

The second compares with the last saved run and fails if a median grew by more than 10%. All
implementations share this process here; `mtrl-fast bench` runs each in a process of its own.
"""

import pytest

from mtrl_fast.bench import peers
from mtrl_fast.bench.workload import PEER_POINTS

INSTALLED = [name for name in peers.names() if name != "reference" and peers.get(name).available()[0]]


@pytest.mark.parametrize("name", INSTALLED)
@pytest.mark.parametrize("point", PEER_POINTS, ids=lambda p: p.label.replace(" ", "-"))
def test_step(benchmark, point, name):
    benchmark.group = point.label
    step = peers.get(name).prepare(*point.inputs(), "logistic")
    step.run()  # compile / trace outside the timing (pytest-benchmark does not warm up by default)
    benchmark.pedantic(step.run, rounds=7, iterations=1, warmup_rounds=1)
