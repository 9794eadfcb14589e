"""Compiling ahead: builds go into Numba's disk cache from this process and worker processes, once;
and the compile-time table."""

import json

from helpers import run_python

PRECOMPILE = """
import json
from mtrl_fast._kernels import _compile

wanted = _compile.builds(["bias_relu", "per_task_forward_block"], ("serial",), ("float64",))
first = _compile.precompile(wanted, processes=2)
on_disk = [build.lazy().on_disk() for build in wanted]
again = _compile.precompile(wanted, processes=2)
print(json.dumps({"first": sorted(map(str, first)), "on_disk": on_disk, "again": [str(b) for b in again]}))
"""


def test_precompile_fills_the_cache_once_from_this_process_and_a_worker(tmp_path):
    done = run_python(PRECOMPILE, NUMBA_CACHE_DIR=str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["first"] == ["bias_relu:serial:float64", "per_task_forward_block:serial:float64"]
    assert result["on_disk"] == [True, True]
    assert result["again"] == []  # nothing left to compile


def test_compile_times_time_each_build_in_a_fresh_cache():
    from mtrl_fast._kernels import _compile

    times = _compile.compile_times(_compile.builds(["bias_relu"], ("serial",)))
    assert [str(build) for build, _ in times] == ["bias_relu:serial:float32", "bias_relu:serial:float64"]
    assert all(seconds > 0 for _, seconds in times)
