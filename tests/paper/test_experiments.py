"""The reproduction runner: outputs, resuming after an interruption, the command line."""

import json
from dataclasses import replace

import pytest
from test_report_stops import GRID as REPORT_GRID

from mtrl_fast import _runtime, cli
from mtrl_fast._progress import Progress
from mtrl_fast.paper import experiments, report
from mtrl_fast.paper.experiments import Grid, plan, reproduce, run_grid
from mtrl_fast.paper.shards import GROUP_TASKS, task_bytes, task_shards
from mtrl_fast.paper.studies import STUDIES
from mtrl_fast.paper.train import PretrainConfig

TINY = Grid(
    d=(8, 12),
    r=2,
    tasks=(1, 3, 6),
    seeds=2,
    downstream_d=(8, 12),
    n_new=(4, 10),
    downstream_tasks=6,
    n_test=100,
    probe_tasks=2,
    pretrain=PretrainConfig(width=12, samples_per_task=30),
)


def test_reproduce_writes_every_output(tmp_path):
    rows = reproduce(TINY, tmp_path, progress=False)
    for study in ("recovery", "downstream", "mechanism"):  # the default studies
        for name in (f"{study}.csv", f"{study}.png"):
            assert (tmp_path / name).is_file(), name
    for name in ("results.json", "report.md"):
        assert (tmp_path / name).is_file(), name
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["config"]["d"] == [8, 12]
    assert len(document["recovery"]) == 2 * 3 * 2
    assert len(document["downstream"]) == 2 * 2 * 4 * 2
    record = document["recovery"][0]
    assert {"d", "r", "T", "seed", "subspace_distance", "energy_outside"} <= set(record)
    assert {r["features"] for r in document["downstream"]} == {"multi-task", "single-task", "random", "oracle"}
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in document["downstream"])
    assert (tmp_path / "recovery.csv").read_text().splitlines()[0].startswith("d,r,T,seed,subspace_distance")
    text = (tmp_path / "report.md").read_text()
    assert "## The paper's claims" in text and "![recovery.png](recovery.png)" in text
    assert len(rows) == 6 and all(isinstance(r["holds"], bool) or r["holds"] is None for r in rows)
    # TINY stops at T = 6: the many-task claim is reported as not evaluated, with the reason, not failed
    (many,) = [r for r in rows if r["claim"].startswith("Many tasks")]
    assert many["verdict"] == "not evaluated" and "at least 100" in many["measured"]
    assert [r["verdict"] for r in document["claims"]] == [r["verdict"] for r in rows]
    assert (tmp_path / "claims.csv").read_text().splitlines()[0] == "claim,measured,threshold,verdict"
    assert "label agreement" in rows[-1]["claim"]


def test_interrupted_run_resumes_without_recomputing(tmp_path, monkeypatch):
    real = experiments.run_cell
    calls = []

    def interrupted_after_five(cell, grid, *options):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(cell.name)
        return real(cell, grid, *options)

    monkeypatch.setattr(experiments, "run_cell", interrupted_after_five)
    with pytest.raises(KeyboardInterrupt):
        run_grid(TINY, tmp_path, progress=False)
    finished = sorted(p.name for p in (tmp_path / "cells").glob("*.json"))
    assert len(finished) == 5
    assert not list((tmp_path / "cells").glob(".*tmp"))  # no half-written file left behind

    monkeypatch.setattr(
        experiments, "run_cell", lambda cell, grid, *options: calls.append(cell.name) or real(cell, grid, *options)
    )
    resumed = run_grid(TINY, tmp_path, progress=False)
    assert len(calls) == len(plan(TINY))  # the five finished cells were not run again
    assert len(set(calls)) == len(calls)

    fresh = run_grid(TINY, tmp_path / "fresh", progress=False)
    assert resumed == fresh  # every cell is seeded on its own: order and interruption do not matter


def test_changed_settings_recompute_and_corrupt_cells_are_redone(tmp_path, monkeypatch):
    run_grid(TINY, tmp_path, progress=False)
    calls = []
    real = experiments.run_cell
    monkeypatch.setattr(
        experiments, "run_cell", lambda cell, grid, *options: calls.append(cell.name) or real(cell, grid, *options)
    )
    run_grid(TINY, tmp_path, progress=False)
    assert calls == []
    broken = tmp_path / "cells" / f"{plan(TINY)[0].name}.json"
    broken.write_text("{not json")
    with pytest.warns(RuntimeWarning, match="not valid JSON; recomputing the cell"):
        run_grid(TINY, tmp_path, progress=False)
    assert calls == [plan(TINY)[0].name]
    changed = replace(TINY, pretrain=replace(TINY.pretrain, head_lr=0.2))
    calls.clear()
    run_grid(changed, tmp_path, progress=False)
    assert len(calls) == len(plan(changed))


@pytest.mark.parametrize("threads", [1, 2])
def test_records_are_bitwise_the_same_whatever_jobs_and_memory_budget_for_equal_threads(tmp_path, threads):
    """The README's determinism promise: same --threads, any --jobs, any --memory-budget (the
    default depends on --jobs and the free memory), identical records. Before, the test passed no
    budget, and a cell sharded by 10 tasks differed from one sharded by 7."""
    small = replace(
        TINY,
        d=(8, 40),
        tasks=(1, 40),
        downstream_d=(8,),
        downstream_tasks=40,
        seeds=1,
        pretrain=replace(TINY.pretrain, width=64),
    )
    group = GROUP_TASKS * task_bytes(small.pretrain, 40, small.r)
    serial = run_grid(small, tmp_path / "serial", progress=False, threads=threads)
    for jobs, budget in ((2, None), (1, group), (2, 2 * group)):
        assert len(task_shards(40, small.pretrain, 40, small.r, budget)) == (
            1 if budget is None else 3 if budget == group else 2
        )
        other = run_grid(
            small, tmp_path / f"jobs{jobs}-{budget}", jobs=jobs, progress=False, threads=threads, memory_budget=budget
        )
        assert other == serial, (jobs, budget)


def test_claims_verdicts_follow_the_numbers():
    grid = replace(
        TINY, tasks=(1, 10, 100), d=(8,), downstream_d=(8, 12), n_new=(100,), studies=("recovery", "downstream")
    )

    def recovery(distances, energy):
        return [
            {"d": 8, "T": T, "seed": 0, "subspace_distance": v, "energy_outside": energy}
            for T, v in zip((1, 10, 100), distances)
        ]

    def downstream(multi, random):
        return [
            {"d": d, "n_new": 100, "features": f, "seed": 0, "accuracy": acc}
            for d, accs in ((8, (multi[0], random[0])), (12, (multi[1], random[1])))
            for f, acc in zip(("multi-task", "random"), accs)
        ]

    good = report.claims(
        {"recovery": recovery((0.95, 0.5, 0.2), 0.05), "downstream": downstream((0.9, 0.9), (0.8, 0.6))}, grid
    )
    assert [r["holds"] for r in good] == [True, True, True, True, True]
    bad = report.claims(
        {"recovery": recovery((0.5, 0.6, 0.4), 0.2), "downstream": downstream((0.9, 0.6), (0.8, 0.7))}, grid
    )
    assert [r["holds"] for r in bad] == [False, False, False, False, False]


def test_grid_validation():
    with pytest.raises(ValueError, match="every d must be at least r"):
        Grid(d=(3,), r=5)
    with pytest.raises(ValueError, match="n_new"):
        Grid(n_new=(1, 10))
    with pytest.raises(ValueError, match="tasks"):
        Grid(tasks=(0, 5))


def test_command_line(tmp_path, capsys):
    code = cli.main(
        [
            "reproduce",
            "--out",
            str(tmp_path),
            "--d",
            "8",
            "--r",
            "2",
            "--tasks",
            "1,4",
            "--seeds",
            "1",
            "--downstream-d",
            "8,10",
            "--n-new",
            "5",
            "--downstream-tasks",
            "4",
            "--width",
            "10",
            "--samples-per-task",
            "20",
            "--no-progress",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "| claim |" in out and "report.md" in out
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["config"]["tasks"] == [1, 4] and document["config"]["pretrain"]["width"] == 10


def test_command_line_rejects_bad_values(tmp_path, capsys):
    assert cli.main(["reproduce", "--out", str(tmp_path), "--d", "3", "--r", "5"]) == 2
    assert "every d must be at least r" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["reproduce", "--d", "fifty"])


def test_progress_lines(capsys):
    bar = Progress(2)
    bar.step("first")
    bar.step("second")
    err = capsys.readouterr().err.splitlines()
    assert "1/2 first" in err[0] and "2/2 second" in err[1] and "eta" in err[1]


def test_the_claim_at_scale_needs_the_distance_halved_beyond_T_100(tmp_path):
    grid = replace(TINY, tasks=(1, 100, 1000, 10000), d=(8, 12), downstream_d=(8,), n_new=(10,))

    def records(far):
        return [
            {"d": d, "r": 2, "T": T, "seed": 0, "subspace_distance": v, "energy_outside": 0.01, "final_loss": 0.0}
            for d in (8, 12)
            for T, v in zip(grid.tasks, (1.0, 0.2, 0.12, far))
        ]

    for far, holds in ((0.05, True), (0.15, False)):
        rows = report.claims({"recovery": records(far), "downstream": []}, grid)
        scale = next(r for r in rows if "beyond T = 100" in r["claim"])
        assert scale["holds"] is holds and "at T = 10000" in scale["measured"] and "slope" in scale["measured"]
    report.write_outputs({"recovery": records(0.05), "downstream": []}, grid, tmp_path)
    assert (tmp_path / "recovery-loglog.png").is_file()
    assert "recovery-loglog.png" in (tmp_path / "report.md").read_text()
    rows = report.claims(
        {"recovery": [r for r in records(0.05) if r["T"] <= 100], "downstream": []}, replace(grid, tasks=(1, 100))
    )
    assert not any("beyond T = 100" in r["claim"] for r in rows)  # no claim without T >= 1000


def test_the_downstream_claim_at_scale_needs_multi_task_kept_and_random_lost():
    grid = replace(TINY, downstream_d=(200, 2000), n_new=(100,))

    def downstream(multi, random):
        return [
            {"d": d, "n_new": 100, "features": f, "seed": 0, "accuracy": acc}
            for d, accs in ((200, (0.90, 0.60)), (2000, (multi, random)))
            for f, acc in zip(("multi-task", "random"), accs)
        ]

    def verdict(multi, random):
        rows = report.claims({"recovery": [], "downstream": downstream(multi, random)}, grid)
        return next(r for r in rows if "keep their downstream accuracy" in r["claim"])["holds"]

    assert verdict(0.89, 0.50)
    assert not verdict(0.85, 0.50)  # multi-task lost 5 points
    assert not verdict(0.90, 0.58)  # random kept its accuracy
    small = report.claims({"recovery": [], "downstream": downstream(0.9, 0.5)}, replace(grid, downstream_d=(50, 400)))
    assert not any("keep their downstream accuracy" in r["claim"] for r in small)


def test_each_cell_records_where_its_time_went_and_the_report_sums_it(tmp_path, capsys):
    from mtrl_fast.paper.clock import PARTS

    assert cli.main(["reproduce", "--out", str(tmp_path), *REPORT_GRID, "--jobs", "1", "--profile"]) == 0
    cells = {path.name: json.loads(path.read_text()) for path in (tmp_path / "cells").glob("*.json")}
    trained = next(cell for name, cell in cells.items() if name.startswith("recovery-"))
    probed = next(cell for name, cell in cells.items() if name.startswith("downstream-"))
    for cell in cells.values():
        assert list(cell["parts"]) == list(PARTS)
        assert sum(cell["parts"].values()) == pytest.approx(cell["seconds"], rel=1e-6)
    assert trained["parts"]["sampling"] > 0 and trained["parts"]["kernels"] > 0 and probed["parts"]["probe"] > 0
    # The downstream cell probes the networks the recovery cells trained, at (d, T) = (8, 3) and (8, 1).
    assert trained["networks"] == {"trained": 1, "reused": 0}
    assert probed["networks"] == {"trained": 0, "reused": 2} and probed["parts"]["kernels"] == 0
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["profile"]["cells"] == 3
    assert document["profile"]["networks"] == {"trained": 2, "reused": 2}
    assert "## Where the time went (3 cells, summed)" in (tmp_path / "report.md").read_text()
    out = capsys.readouterr().out
    assert "where the time went (3 cells, summed):" in out and "| sampling |" in out
    assert "Pretrained networks: 2 trained, 2 read by another cell" in out


def test_a_run_compiles_its_kernels_in_the_parent_first(tmp_path, monkeypatch):
    """The workers load the kernels from the cache instead of all compiling them at once; a run in
    one process has them compiled at once too, in worker processes (one kernel each)."""
    calls = []
    real = experiments.warm_up
    monkeypatch.setattr(
        experiments, "warm_up", lambda grid, threads, **kw: calls.append(grid) or real(grid, threads, **kw)
    )
    small = replace(TINY, d=(8,), tasks=(1, 3), downstream_d=(), seeds=1)
    run_grid(small, tmp_path / "pool", jobs=2, progress=False)
    assert calls == [small]
    run_grid(small, tmp_path / "serial", jobs=1, progress=False)
    assert calls == [small, small]
    run_grid(small, tmp_path / "serial", jobs=1, progress=False)
    assert calls == [small, small]  # nothing left to run: nothing to compile


@pytest.mark.parametrize("layout, sampler", [("per-task", "full"), ("per-task", "reduced"), ("shared", "full")])
def test_the_declared_kernels_are_all_that_a_run_compiles(tmp_path, monkeypatch, layout, sampler):
    """What the registries declare (the step's passes, the samplers' draws) is every kernel build a
    run calls, so that compiling them ahead leaves nothing to compile one after the other."""
    from mtrl_fast._kernels import _compile, _jit

    grid = replace(TINY, d=(8, 40), tasks=(1, 6), downstream_d=(), seeds=1)
    grid = replace(grid, pretrain=replace(grid.pretrain, layout=layout, sampler=sampler, width=6))
    declared = set(experiments.kernel_builds(grid))
    names = {
        id(kernel): (name, twin)
        for name, p in _compile.KERNELS.items()
        for twin, kernel in (("serial", p.serial_kernel), ("parallel", p.kernel))
    }
    called = set()
    real = _jit.LazyKernel.compile

    def compile(kernel, float_type):
        called.add(_compile.Build(*names[id(kernel)], float_type))
        return real(kernel, float_type)

    monkeypatch.setattr(_jit.LazyKernel, "compile", compile)
    monkeypatch.setattr(_compile, "precompile", lambda builds: [])  # the kernels compile here, seen
    monkeypatch.setattr(_runtime, "PARALLEL_MIN_WORK", 1 << 40)  # as the library runs: serial twins
    run_grid(grid, tmp_path, jobs=1, progress=False)
    assert called and called <= declared, called - declared


def test_the_at_scale_claim_covers_only_the_d_whose_records_reach_t_1000():
    """Before, every d of the grid counted as reaching T = 1000 once any T did, whatever its records."""
    grid = replace(TINY, d=(8, 12), tasks=(1, 100, 1000), downstream_d=(), n_new=(100,))
    recovery = [
        {"d": 8, "T": T, "seed": 0, "subspace_distance": v, "energy_outside": 0.01}
        for T, v in ((1, 1.0), (100, 0.2), (1000, 0.06))
    ]
    recovery += [
        {"d": 12, "T": T, "seed": 0, "subspace_distance": v, "energy_outside": 0.01} for T, v in ((1, 1.0), (100, 0.2))
    ]  # its T = 1000 cell is missing
    rows = report.claims({"recovery": recovery, "downstream": []}, grid)
    at_scale = next(row for row in rows if row["claim"].startswith("The distance keeps falling beyond T = 100"))
    assert "d=8: 0.200 -> 0.0600 at T = 1000" in at_scale["measured"]
    assert "d=12" not in at_scale["measured"]
    assert at_scale["holds"]


def _verdicts(rows):
    return {row["claim"].split(" (")[0]: (row["verdict"], row["measured"]) for row in rows}


def test_a_claim_is_judged_only_on_the_cells_it_is_about():
    """Before: with no T = 1 in the grid, the single-task claim was judged at T = 3000 and failed,
    and the trend and mechanism claims vanished with fewer than three task counts."""
    grid = replace(TINY, d=(8,), tasks=(100, 3000), studies=("recovery", "mechanism"))
    records = [{"d": 8, "T": T, "seed": 0, "subspace_distance": 3 / T, "energy_outside": 0.01} for T in grid.tasks]
    rows = report.claims({"recovery": records, "mechanism": []}, grid)
    verdicts = _verdicts(rows)
    assert verdicts["One task cannot learn all r = 2 directions"] == (
        "not evaluated",
        "not evaluated: needs T = 1 in the grid; got T = 100, 3000",
    )
    assert verdicts["Many tasks recover span(M)"][0] == "holds"
    assert verdicts["Subspace distance falls as T grows"] == (
        "not evaluated",
        "not evaluated: needs three task counts; got 2 (T = 100, 3000)",
    )
    assert verdicts["Multi-task pretraining aligns the features with cross-task label agreement"][0] == "not evaluated"
    assert "FAILS" not in report.claims_table(rows) and "not evaluated" in report.claims_table(rows)


def test_every_studys_claims_are_accounted_for_on_a_thin_grid():
    """A grid too thin for a claim reports it as not evaluated: no study returns fewer rows."""
    thin = replace(TINY, d=(8,), tasks=(6,), downstream_d=(8,), width_d=(8,), studies=tuple(STUDIES))
    rows = report.claims({name: [] for name in STUDIES}, thin)
    full = report.claims(
        {name: [] for name in STUDIES}, replace(thin, tasks=(1, 3, 100), downstream_d=(8, 12), width_d=(8, 12))
    )
    assert len(rows) == len(full) >= 7
    assert all(row["verdict"] == "not evaluated" for row in rows), [r for r in rows if r["verdict"] != "not evaluated"]


@pytest.mark.parametrize("allow", [False, True])
def test_strict_fails_on_an_unevaluated_claim_unless_allowed(tmp_path, capsys, allow):
    argv = [
        "reproduce",
        "--d",
        "8",
        "--r",
        "2",
        "--tasks",
        "2,3",
        "--seeds",
        "1",
        "--studies",
        "recovery",
        "--width",
        "8",
        "--samples-per-task",
        "20",
        "--out",
        str(tmp_path),
        "--no-progress",
        "--strict",
    ]
    code = cli.main(argv + (["--allow-unevaluated"] if allow else []))
    out, err = capsys.readouterr()
    assert "not evaluated: needs T = 1 in the grid" in out
    if allow:
        assert "not evaluated" not in err
        assert code == (1 if "FAILS" in out else 0)
    else:
        assert code == 1 and "--allow-unevaluated" in err
