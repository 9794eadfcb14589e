"""The benchmark harness: workload, timer, checks before timing, alternating rounds, outputs."""

import json
import os
import re
import subprocess
import time

import numpy as np
import pytest

from helpers import run_python
from mtrl_fast import gemms
from mtrl_fast.bench import output, runner, timing, workload
from mtrl_fast.bench.workload import Point


def test_points_count_flops_and_bytes():
    p = Point("shared", 10, 20, 30, 4)
    assert p.flops == 4 * 10 * 20 * 30 + 6 * 10 * 30 * 4
    q = Point("per-task", 10, 20, 30, 4)
    assert q.flops == 4 * 4 * 10 * 20 * 30 + 5 * 4 * 10 * 30
    assert q.input_bytes() == 4 * (4 * 10 * 20 + 4 * 10 + 2 * (30 * 20 + 30 + 4 * 30))


def test_grids_hold_sweeps_around_a_base():
    points = workload.make_grid(quick=True)
    shared = [p for p in points if p.layout == "shared"]
    base = shared[0]
    assert {p.d for p in shared if (p.n, p.m, p.T) == (base.n, base.m, base.T)} >= {64, 256, 1024}
    per_task = [p for p in points if p.layout == "per-task"]
    assert len({p.T * p.n for p in per_task if (p.d, p.m) == (per_task[0].d, per_task[0].m)}) == 1
    assert len(points) == len(set(points))


@pytest.mark.parametrize(
    "point, expected",
    [
        # shared, many tasks: X W^T, A H^T, R H, R^T A, D^T X
        (
            Point("shared", 64, 16, 8, 6),
            [((64, 16), (16, 8)), ((6, 8), (8, 64)), ((6, 64), (64, 8)), ((64, 6), (6, 8)), ((8, 64), (64, 16))],
        ),
        # shared, few tasks: R^T A is fused into the mask pass, so it is not a product of the step
        (
            Point("shared", 64, 16, 8, 2),
            [((64, 16), (16, 8)), ((2, 8), (8, 64)), ((2, 64), (64, 8)), ((8, 64), (64, 16))],
        ),
        # per-task, one block: the stacked rows in and out
        (Point("per-task", 8, 16, 4, 3), [((24, 16), (16, 4)), ((4, 24), (24, 16))]),
    ],
)
def test_step_products_are_what_the_step_runs(point, expected):
    args = point.inputs()
    run, shapes = workload.step_products(args)
    assert shapes == expected
    run()


def test_step_products_follow_the_per_task_blocks(monkeypatch):
    from mtrl_fast import ops

    monkeypatch.setattr(ops, "BLOCK_BYTES", 10 * 4 * 4)  # 10 rows of m = 4 float32
    monkeypatch.setattr(ops, "BLOCK_MIN_BYTES", 0)
    _, shapes = workload.step_products(Point("per-task", 8, 16, 4, 3).inputs())
    assert shapes == [((10, 16), (16, 4)), ((4, 10), (10, 16))] * 2 + [((4, 16), (16, 4)), ((4, 4), (4, 16))]


def test_agreement_check_catches_a_wrong_gradient():
    grads = (np.ones((3, 2)), None, np.ones((2, 3)))
    assert runner._agrees((1.0, grads), (1.0, grads), "float64")[0]
    wrong = (np.ones((3, 2)) * 1.01, None, np.ones((2, 3)))  # 1% off in norm
    ok, why = runner._agrees((1.0, wrong), (1.0, grads), "float64")
    assert not ok and "gradient W" in why
    assert not runner._agrees((1.1, grads), (1.0, grads), "float32")[0]


def test_run_and_write(tmp_path):
    points = [Point("shared", 64, 16, 8, 3), Point("shared", 64, 32, 8, 3), Point("per-task", 16, 16, 8, 3)]
    rows = runner.run_benchmarks(
        points, ["mtrl_fast", "numpy", "reference"], threads=1, repeat=2, progress=False, log=lambda text: None
    )
    assert len(rows) == 3 * 3
    for row in rows:
        assert row["median_s"] > 0 and row["gflops"] > 0 and row["checked_against"] == "reference"
        assert row["note"] == ""
        assert row["peak_bytes"] is None or row["peak_bytes"] > 0
    ours = [r for r in rows if r["backend"] == "mtrl_fast"]
    assert all(r["speedup_over_best_peer"] > 0 for r in ours)  # numpy is a peer; reference is not
    for row in rows:  # the limit: the step's products on the fastest provider, timed in this run
        assert set(row["provider_s"]) == set(gemms.available())
        assert row["limit_s"] == min(row["provider_s"].values()) == row["provider_s"][row["limit_gemm"]]
        assert row["over_limit"] == pytest.approx(row["median_s"] / row["limit_s"])
    assert all(r["gemm"] == "numpy" and r["gemm_s"] == r["provider_s"]["numpy"] for r in ours)
    env = output.environment(["mtrl_fast", "numpy"])
    table = output.write_outputs(rows, env, points, tmp_path)
    assert "speedup over the best peer" in table and env["cpu"] in table
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert len(saved["rows"]) == 9
    assert (tmp_path / "bench.csv").read_text().startswith("layout,n,d,m,T,dtype,backend")
    assert (tmp_path / "throughput-shared-d.png").is_file()


def test_our_step_runs_on_the_gemm_asked_and_big_points_are_checked_against_the_numpy_peer(monkeypatch):
    monkeypatch.setattr(runner, "REFERENCE_FLOP_BUDGET", 0)  # as at a point too big for the reference
    chosen = gemms.available()[-1]
    rows = runner.run_benchmarks(
        [Point("shared", 64, 16, 8, 3)],
        ["mtrl_fast"],
        threads=1,
        repeat=2,
        progress=False,
        measure_memory=False,
        gemm=chosen,
    )
    (row,) = rows
    assert row["note"] == "" and row["checked_against"] == "numpy"
    assert row["gemm"] == chosen and row["over_gemm"] == pytest.approx(row["median_s"] / row["provider_s"][chosen])


def test_rounds_are_checked_timed_and_counted(tmp_path):
    points = [Point("shared", 64, 16, 8, 6), Point("per-task", 16, 16, 8, 3)]
    rows = runner.run_benchmarks(
        points,
        ["mtrl_fast", "numpy"],
        threads=1,
        repeat=2,
        progress=False,
        log=lambda text: None,
        measure_memory=False,
        workload="round",
    )
    assert len(rows) == 4 and all(r["note"] == "" and r["checked_against"] == "reference" for r in rows)
    for row in rows:
        point = Point(row["layout"], row["n"], row["d"], row["m"], row["T"])
        assert row["gflops"] == pytest.approx(point.workload_flops("round") / row["median_s"] / 1e9)
        assert np.isnan(row["over_gemm"])
    assert point.workload_flops("round") == point.flops + workload.ROUND["head_steps"] * point.head_step_flops
    table = output.format_table(rows, output.environment(["mtrl_fast"]))
    assert "nan" not in table


def test_table_warns_when_blas_kernels_are_pinned(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    env = output.environment(["mtrl_fast"])
    assert "OPENBLAS_CORETYPE=Haswell" in env["blas_pins"]
    assert "WARNING" in output.format_table([], env)
    monkeypatch.delenv("OPENBLAS_CORETYPE")
    monkeypatch.delenv("OPENBLAS_L2_SIZE", raising=False)
    assert "WARNING" not in output.format_table([], output.environment(["mtrl_fast"]))


def test_bursts_time_fast_calls_back_to_back_and_slow_calls_alone():
    calls = []

    def fast():
        calls.append(1)

    def slow():
        time.sleep(timing.BURST_S * 1.5)

    assert timing.burst_calls(fast) == timing.BURST_MAX_CALLS
    assert timing.burst_calls(slow) == 1
    calls.clear()
    assert timing.time_burst(fast, 5) >= 0.0
    assert len(calls) == 6  # one untimed call, then the burst
    calls.clear()
    timing.time_burst(fast, 1)  # a slow call's burst of one is still the second of a loop
    assert len(calls) == 2


def test_alternating_rounds_take_turns():
    order = []
    samples = timing.alternating_samples({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, rounds=3)
    assert {name: len(times) for name, times in samples.items()} == {"a": 3, "b": 3}
    assert set(order) == {"a", "b"}


PEER_POLICY = """
    from mtrl_fast.bench.runner import _Worker
    for name in ("numpy", "mtrl_fast"):
        worker = _Worker(name, 1)
        worker.ask("version")
        worker.close()
        print("done", name, flush=True)
"""


def test_peers_run_with_the_users_wait_policy_and_ours_with_passive():
    """The NumPy/PyTorch/JAX workers get the user's OpenMP setting (here: unset, libgomp's spinning
    default), not the PASSIVE that importing mtrl_fast sets; our own worker keeps PASSIVE."""
    result = run_python(PEER_POLICY, OMP_DISPLAY_ENV="VERBOSE")
    assert result.returncode == 0, result.stderr
    # Every libgomp prints its settings when it loads: the parent's, the numpy worker's, ours.
    blocks = re.findall(r"GOMP_SPINCOUNT = '(\d+)'", result.stderr)
    assert blocks[0] == "0"  # the parent imported mtrl_fast
    assert len(blocks) == 3 and blocks[1] != "0" and blocks[2] == "0", result.stderr


@pytest.mark.parametrize("layout", ["shared", "per-task"])
def test_breakdown_names_the_checks_every_product_and_pass(layout):
    import mtrl_fast

    args = workload.step_inputs(layout, 64, 16, 8, 5, "float64")
    total, parts = timing.breakdown(mtrl_fast.loss_and_grad, args, repeat=3)
    products = [label for label in parts if label.startswith("product ")]
    with mtrl_fast.ops.record_products() as recorded:
        mtrl_fast.loss_and_grad(*args)
    assert len(products) == len({(left.shape, right.shape) for left, right in recorded})
    assert "checks" in parts and "outside the parts" in parts
    assert ("bias_relu" in parts) == (layout == "shared")
    assert ("per_task_backward_block" in parts) == (layout == "per-task")
    assert sum(parts.values()) == pytest.approx(total, rel=0.5)
    assert mtrl_fast._profile.log() is None  # recording ends with the breakdown


def test_step_command_prints_the_breakdown(capsys):
    from mtrl_fast import cli

    assert cli.main(["step", "--n", "64", "--d", "16", "--m", "8", "--T", "5", "--repeat", "3", "--breakdown"]) == 0
    out = capsys.readouterr().out
    assert "where the time goes" in out and "checks" in out and "product (64, 16) @ (16, 8)" in out


def test_perf_gate_verdict_fails_only_a_significant_slowdown_beyond_the_threshold():
    gate = _perf_gate()
    rng = np.random.default_rng(0)
    base = 0.050 * (1 + 0.03 * rng.standard_normal(16))
    same = 0.050 * (1 + 0.03 * rng.standard_normal(16))
    assert not gate.verdict(base, same, 0.10, 0.01)[2]
    assert gate.verdict(base, base * 1.25, 0.10, 0.01)[2]
    assert not gate.verdict(base, base * 1.05, 0.10, 0.01)[2]  # significant, but within the threshold
    one_bad_round = base.copy()
    one_bad_round[3] *= 3
    assert not gate.verdict(base, one_bad_round, 0.10, 0.01)[2]  # a noisy spell is not a regression


def test_native_blas_runs_the_backends_without_the_pins(monkeypatch):
    """--native-blas: the workers' OpenBLAS picks this CPU's kernels, not the pinned ones."""
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Prescott")  # an SSE3 core: never what a current CPU picks
    pinned = runner.worker_blas()
    native = runner.worker_blas(native_blas=True)
    assert "(Haswell)" not in pinned and "(SkylakeX)" not in pinned and "(Zen)" not in pinned, pinned
    assert native != pinned


def _perf_gate():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "perf_gate.py"
    if not path.exists():
        pytest.skip("benchmarks/ is not beside the tests")
    spec = importlib.util.spec_from_file_location("perf_gate", path)
    gate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gate)
    return gate


def _git(*args, cwd):
    subprocess.run(
        ["git", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        env=dict(
            os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t"
        ),
    )


def test_perf_gate_finds_its_bases_in_a_shallow_clone_or_fails(tmp_path):
    """Before: in a depth-1 clone HEAD~1 did not exist and CI printed "no previous commit" and passed."""
    gate = _perf_gate()
    origin = tmp_path / "origin"
    origin.mkdir()
    _git("init", "-q", cwd=origin)
    commits = []
    for i in range(3):
        (origin / "f").write_text(str(i))
        _git("add", "f", cwd=origin)
        _git("commit", "-qm", f"c{i}", cwd=origin)
        commits.append(
            subprocess.run(["git", "rev-parse", "HEAD"], cwd=origin, capture_output=True, text=True).stdout.strip()
        )
    _git("clone", "-q", "--depth", "1", f"file://{origin}", "shallow", cwd=tmp_path)
    shallow = tmp_path / "shallow"
    assert gate.resolve("HEAD~1", root=shallow) == commits[1]
    assert gate.resolve(commits[0], root=shallow) == commits[0]  # a baseline recorded by its commit
    _git("clone", "-q", "--depth", "1", f"file://{origin}", "orphan", cwd=tmp_path)
    _git("remote", "remove", "origin", cwd=tmp_path / "orphan")
    with pytest.raises(gate.BaseMissing, match="shallow clone"):
        gate.resolve("HEAD~1", root=tmp_path / "orphan")
    with pytest.raises(gate.BaseMissing, match="not a commit"):
        gate.resolve("no-such-ref", root=shallow)


def test_perf_gate_covers_more_than_one_setting_and_has_a_recorded_baseline():
    gate = _perf_gate()
    name, commit = gate.baseline()
    assert name and len(commit) == 40
    assert gate.POINTS is workload.GATE_POINTS  # one home for the points
    kinds = {point[0] for point in gate.POINTS}
    assert {"step", "checked", "heads", "forward"} <= kinds
    assert {point[1] for point in gate.POINTS} == {"float32", "float64"}
    assert {point[2] for point in gate.POINTS} == {"shared", "per-task"}


def test_the_cell_benchmark_checks_agreement_then_times_each_implementation():
    from mtrl_fast.bench.cell import SPREAD_RUNS, CellSpec, cell_peers, run_cell_benchmark
    from mtrl_fast.bench.peers import get

    names = tuple(name for name in cell_peers() if get(name).available()[0])
    spec = CellSpec(d=40, T=12, width=16)
    results = run_cell_benchmark(spec, names, threads=1, repeat=2, log=lambda text: None)
    rows = ["mtrl_fast full", "mtrl_fast reduced", *(name for name in names if name != "mtrl_fast")]
    assert list(results) == rows
    assert [results[row]["sampler"] for row in rows[:2]] == ["full", "reduced"]
    assert results["mtrl_fast full"]["coordinates"] == 40 and results["mtrl_fast reduced"]["coordinates"] == 5 + 16
    assert results["mtrl_fast reduced"]["flops"] < results["mtrl_fast full"]["flops"]
    assert len(results["mtrl_fast reduced"]["distance"] + results["mtrl_fast reduced"]["spread"]) == SPREAD_RUNS
    for row in rows:
        assert len(results[row]["seconds"]) == 2 and all(s > 0 for s in results[row]["seconds"])
        assert all(0.0 <= distance <= 1.0 for distance in results[row]["distance"])
        assert results[row]["coordinates"] == (21 if row == "mtrl_fast reduced" else 40)


def test_the_cell_benchmark_runs_ours_on_the_full_sampler_where_reduction_saves_nothing():
    from mtrl_fast.bench.cell import CellSpec, Row, rows_for

    assert rows_for(("mtrl_fast", "torch"), CellSpec(d=16, T=4, width=16)) == [
        Row("mtrl_fast full", "mtrl_fast", "full"),
        Row("torch", "torch", "full"),
    ]


# The distances of one T = 16 cell (d = 400, width 256) over seeds: a draw moves it by about 0.05.
SMALL_CELL_SPREAD = [0.4668, 0.4402, 0.5113, 0.4321, 0.4890, 0.4519]


def test_the_agreement_check_allows_the_seeds_spread_and_no_more():
    """Before: one run each at T = 16 gave a tolerance of 10% of the mean, and a correct peer whose
    draw landed 0.047 away was refused as "not the same computation"."""
    from mtrl_fast.bench.cell import check_agreement

    ours = {"distance": SMALL_CELL_SPREAD[:1], "spread": SMALL_CELL_SPREAD[1:]}
    check_agreement({"mtrl_fast full": ours, "torch": {"distance": [0.4193]}, "jax": {"distance": [0.5210]}})
    for wrong in (0.80, 0.25):  # another computation: a distance several spreads away
        with pytest.raises(RuntimeError, match="not the same computation"):
            check_agreement({"mtrl_fast full": ours, "torch": {"distance": [wrong]}})
    # A large cell's distance barely moves: the same check then refuses a much smaller gap.
    tight = {"distance": [0.0410, 0.0432, 0.0421], "spread": [0.0415, 0.0428, 0.0419]}
    check_agreement({"mtrl_fast full": tight, "torch": {"distance": [0.0440, 0.0425, 0.0418]}})
    with pytest.raises(RuntimeError, match="not the same computation"):
        check_agreement({"mtrl_fast full": tight, "torch": {"distance": [0.0700, 0.0690, 0.0710]}})


# Ten seeds of a T = 1000 cell (d = 400, width 256): the distance moves by about a thousandth.
LARGE_CELL_SPREAD = [0.0461, 0.0452, 0.0470, 0.0458, 0.0466, 0.0449, 0.0463, 0.0455, 0.0468, 0.0457]


def test_a_peer_two_spreads_off_at_t_1000_is_refused_whatever_its_own_spread():
    """Before: the allowance pooled every row's spread (a noisy wrong peer widened its own) and never
    fell below 0.02, twenty times the spread at T = 1000: a peer two spreads off passed."""
    from mtrl_fast.bench.cell import check_agreement

    ours = {"distance": LARGE_CELL_SPREAD[:3], "spread": LARGE_CELL_SPREAD[3:]}
    mean, spread = np.mean(LARGE_CELL_SPREAD), np.std(LARGE_CELL_SPREAD, ddof=1)
    check_agreement({"mtrl_fast full": ours, "torch": {"distance": [0.0457, 0.0466, 0.0452]}})  # a correct peer
    off = mean + 2 * spread
    for peer in ([off, off, off], [off - 0.01, off + 0.01, off]):  # steady, and noisy
        with pytest.raises(RuntimeError, match="not the same computation"):
            check_agreement({"mtrl_fast full": ours, "torch": {"distance": peer}})


def test_one_recorder_serves_the_breakdown_and_the_products_list():
    """A products list taken inside a breakdown's recording leaves the breakdown whole."""
    import mtrl_fast
    from mtrl_fast import _profile

    args = workload.step_inputs("shared", 32, 8, 6, 5, "float32")
    with _profile.recording() as outer:
        with mtrl_fast.ops.record_products() as products:
            mtrl_fast.loss_and_grad(*args)
    assert products and all(left.ndim == right.ndim == 2 for left, right in products)
    logged = [part for part in outer if part.label.startswith("product ")]
    assert [part.operands for part in logged] == products
    assert any(part.label == "checks" for part in outer) and _profile.log() is None


def test_each_round_starts_with_the_next_function():
    """One rotation for the in-process timings and the runner's worker processes."""
    assert [timing.rotated("abc", r) for r in range(4)] == [list("abc"), list("bca"), list("cab"), list("abc")]
    assert timing.rotated({"base": 1, "new": 2}, 1) == ["new", "base"]
