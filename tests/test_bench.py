"""The benchmark runner: checks before timing, alternating rounds, outputs (tiny shapes)."""
import json
import time

import numpy as np

from mtrl_fast import bench, cli


def test_points_count_flops_and_bytes():
    p = bench.Point("shared", 10, 20, 30, 4)
    assert p.flops == 4 * 10 * 20 * 30 + 6 * 10 * 30 * 4
    q = bench.Point("per-task", 10, 20, 30, 4)
    assert q.flops == 4 * 4 * 10 * 20 * 30 + 5 * 4 * 10 * 30
    assert q.input_bytes() == 4 * (4 * 10 * 20 + 4 * 10 + 2 * (30 * 20 + 30 + 4 * 30))


def test_grids_hold_sweeps_around_a_base():
    points = bench.make_grid(quick=True)
    shared = [p for p in points if p.layout == "shared"]
    base = shared[0]
    assert {p.d for p in shared if (p.n, p.m, p.T) == (base.n, base.m, base.T)} >= {64, 256, 1024}
    per_task = [p for p in points if p.layout == "per-task"]
    assert len({p.T * p.n for p in per_task if (p.d, p.m) == (per_task[0].d, per_task[0].m)}) == 1
    assert len(points) == len(set(points))


def test_agreement_check_catches_a_wrong_gradient():
    grads = (np.ones((3, 2)), None, np.ones((2, 3)))
    assert bench._agrees((1.0, grads), (1.0, grads), "float64")[0]
    wrong = (np.ones((3, 2)) * 1.01, None, np.ones((2, 3)))  # 1% off in norm
    ok, why = bench._agrees((1.0, wrong), (1.0, grads), "float64")
    assert not ok and "gradient W" in why
    assert not bench._agrees((1.1, grads), (1.0, grads), "float32")[0]


def test_run_and_write(tmp_path):
    points = [bench.Point("shared", 64, 16, 8, 3), bench.Point("shared", 64, 32, 8, 3),
              bench.Point("per-task", 16, 16, 8, 3)]
    rows = bench.run_benchmarks(points, ["numba", "numpy", "reference"], threads=1, repeat=2, progress=False,
                                log=lambda text: None)
    assert len(rows) == 3 * 3
    for row in rows:
        assert row["median_s"] > 0 and row["gflops"] > 0 and row["checked_against"] == "reference"
        assert row["note"] == ""
        assert row["peak_bytes"] is None or row["peak_bytes"] > 0
    ours = [r for r in rows if r["backend"] == "numba"]
    assert all(r["speedup_over_best_peer"] > 0 for r in ours)  # numpy is a peer; reference is not
    env = bench.environment(["numba", "numpy"])
    table = bench.write_outputs(rows, env, points, tmp_path)
    assert "speedup over the best peer" in table and env["cpu"] in table
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert len(saved["rows"]) == 9
    assert (tmp_path / "bench.csv").read_text().startswith("layout,n,d,m,T,dtype,backend")
    assert (tmp_path / "throughput-shared-d.png").is_file()


def test_bench_command_rejects_unknown_backends(capsys):
    assert cli.main(["bench", "--backends", "numba,tensorflow"]) == 2
    assert "unknown backend" in capsys.readouterr().err


def test_bursts_time_fast_calls_back_to_back_and_slow_calls_alone():
    calls = []

    def fast():
        calls.append(1)

    def slow():
        time.sleep(bench._BURST_S * 1.5)

    assert bench._burst_calls(fast) == bench._BURST_MAX_CALLS
    assert bench._burst_calls(slow) == 1
    calls.clear()
    assert bench._time_burst(fast, 5) >= 0.0
    assert len(calls) == 6  # one untimed call, then the burst
    calls.clear()
    bench._time_burst(fast, 1)
    assert len(calls) == 1
