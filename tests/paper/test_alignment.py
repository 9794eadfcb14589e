"""The mechanism's measurements: the label-agreement kernel (closed form against Monte Carlo), the
alignment's properties, and the study end to end with its claim."""

import json
from dataclasses import replace

import numpy as np
import pytest
from test_experiments import TINY

import mtrl_fast.paper as paper
from mtrl_fast.paper import report
from mtrl_fast.paper.experiments import reproduce
from mtrl_fast.paper.studies.mechanism import MARGIN
from mtrl_fast.paper.tasks import make_task_family
from mtrl_fast.paper.train import initial_layer, oracle_layer


def test_the_closed_form_agreement_is_the_mean_over_fresh_tasks():
    """``1 - 2 theta / pi`` against the mean of ``y_t(x) y_t(x')`` over 20000 fresh linear tasks."""
    rng = np.random.default_rng(0)
    family = make_task_family(12, 3, 1, rng)
    X = rng.standard_normal((30, 12))
    exact = paper.label_agreement_kernel(family, X)
    Y = family.new_tasks(20000, rng).labels(X)
    np.testing.assert_allclose(exact, Y.T @ Y / 20000, atol=0.03)  # 4 standard errors of a +-1 mean
    np.testing.assert_allclose(np.diag(exact), 1.0)


def test_the_teachers_agreement_is_a_monte_carlo_mean_and_needs_its_generator():
    rng = np.random.default_rng(1)
    family = make_task_family(10, 2, 1, rng, kind="relu-teacher")
    X = rng.standard_normal((15, 10))
    K = paper.label_agreement_kernel(family, X, tasks=500, rng=np.random.default_rng(2))
    np.testing.assert_allclose(np.diag(K), 1.0)
    assert np.all(np.abs(K) <= 1.0) and np.allclose(K, K.T)
    with pytest.raises(ValueError, match="pass rng"):
        paper.label_agreement_kernel(family, X)
    with pytest.raises(ValueError, match=r"X must be \(N, d\)"):
        paper.label_agreement_kernel(family, X[:, :4])


def test_alignment_is_one_for_the_same_kernel_at_any_scale_and_symmetric():
    rng = np.random.default_rng(3)
    F = rng.standard_normal((20, 5))
    K, L = F @ F.T, np.cov(rng.standard_normal((20, 20)))
    assert paper.kernel_alignment(K, K) == pytest.approx(1.0)
    assert paper.kernel_alignment(K, 7.5 * K + 3.0) == pytest.approx(1.0)  # scale, and constants are centred out
    assert paper.kernel_alignment(K, L) == pytest.approx(paper.kernel_alignment(L, K))
    assert paper.kernel_spearman(K, 2 * K) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="constant"):
        paper.kernel_alignment(K, np.ones((20, 20)))
    with pytest.raises(ValueError, match="square"):
        paper.kernel_alignment(K, F)


def test_a_layer_inside_span_M_aligns_better_than_a_random_one():
    rng = np.random.default_rng(4)
    family = make_task_family(60, 3, 1, rng)
    X = rng.standard_normal((300, 60))
    agreement = paper.label_agreement_kernel(family, X)
    inside = paper.feature_kernel(oracle_layer(64, family.M, rng), None, X)
    random = paper.feature_kernel(initial_layer(64, 60, rng), None, X)
    assert paper.kernel_alignment(inside, agreement) > paper.kernel_alignment(random, agreement) + 0.3


def test_the_mechanism_study_writes_its_records_claim_and_figure(tmp_path):
    grid = replace(TINY, studies=("mechanism",), mechanism_points=40)
    (claim,) = reproduce(grid, tmp_path, progress=False)
    document = json.loads((tmp_path / "results.json").read_text())
    records = document["mechanism"]
    assert len(records) == 2 * 2 * (3 + 3)  # (d, seed) x (three T, three baselines)
    assert {r["features"] for r in records} == {"multi-task", "single-task", "random", "oracle"}
    assert all(-1.0 <= r["alignment"] <= 1.0 for r in records)
    assert "label agreement" in claim["claim"] and isinstance(claim["holds"], bool)
    assert (tmp_path / "mechanism.png").is_file() and (tmp_path / "mechanism.csv").is_file()
    assert "## Alignment of the features" in (tmp_path / "report.md").read_text()


def _records(trained, random, single, d=8):
    rows = [{"d": d, "T": T, "features": "multi-task", "seed": 0, "alignment": a, "spearman": a} for T, a in trained]
    for name, value in (("random", random), ("single-task", single), ("oracle", 0.95)):
        rows.append({"d": d, "T": 0, "features": name, "seed": 0, "alignment": value, "spearman": value})
    return rows


@pytest.mark.parametrize(
    "trained, random, single, holds",
    [
        ([(1, 0.3), (3, 0.6), (6, 0.9)], 0.2, 0.3, True),
        ([(1, 0.3), (3, 0.9), (6, 0.6)], 0.2, 0.3, False),  # not rising
        ([(1, 0.3), (3, 0.4), (6, 0.3 + MARGIN - 0.01)], 0.2, 0.3, False),  # too small a margin
    ],
)
def test_the_mechanism_claim_follows_the_numbers(trained, random, single, holds):
    grid = replace(TINY, d=(8,), studies=("mechanism",))
    (row,) = report.claims({"mechanism": _records(trained, random, single)}, grid)
    assert row["holds"] is holds, row
