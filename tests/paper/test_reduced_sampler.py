"""The reduced sampler: the same distribution as the full one for every reported quantity, shown
by the same tests rejecting four wrong variants; the conditional law of the part it draws from the
Gram matrix; its basis, its edge cases, and its shards."""

import numpy as np
import pytest
from scipy.stats import ks_2samp

from mtrl_fast import loss_and_grad
from mtrl_fast.paper import samplers, shards, train
from mtrl_fast.paper.metrics import probe_accuracy
from mtrl_fast.paper.reduction import joint_coordinates, outside_term, sampled_basis
from mtrl_fast.paper.sampling import draw, normals
from mtrl_fast.paper.tasks import make_task_family
from mtrl_fast.paper.train import PretrainConfig, pretrain

# The size of the derivation's check: d = 30, r = 3, width 8, T = 20, n = 150, one round with
# lr * weight_decay = 1 (so W after the round is -lr gW).
D, R, WIDTH, T, N = 30, 3, 8, 20, 150
SEEDS = 200
QUANTITIES = (
    "subspace distance",
    "objective",
    "objective after the step",
    "|gW|",
    "outside share",
    "outside coupling",
    "downstream accuracy",
)
# Each sampler's seeds are its own (the full sampler's salt 0, the reduced one's 1): the two samples
# are independent, as a two-sample test assumes. (Sharing the family, W0 and the sample seed, as
# this test once did, correlated them at 0.3-0.9 per seed, and a two-sample test on dependent
# samples is conservative: it let a diagonal Gram matrix through at p = 0.55.)
FULL_SALT, REDUCED_SALT = 0, 1
# Power: a two-sample Kolmogorov-Smirnov test over 200 and 200 seeds rejects at p < 1e-4 once the
# two CDFs lie D = 2.15 sqrt(2 / 200) = 0.22 apart, which a location shift of 0.54 standard deviations
# gives on average (D ~ 0.4 shift for normal-like quantities). The broken variants below move their
# quantity by 1.1 (diagonal Gram: the outside coupling) to 60 standard deviations (measured), so each
# is caught with room to spare; the correct sampler must keep every p above 0.01 / 7 (a 1% false
# alarm over the seven quantities, Bonferroni).
PASS_P = 0.01 / len(QUANTITIES)
REJECT_P = 1e-4


def _outcomes(sampler, salt, seeds=SEEDS):
    """Each seed's quantities (see ``QUANTITIES``): the final subspace distance; the objective
    before the first-layer step and after it (on fresh samples); ``|gW|``; the outside part of the
    step, ``O = W (I - Q Q^T)`` with ``Q`` a basis of ``span(M) + span(W0^T)`` (``D^T X_perp``,
    what the reduced sampler draws from the Gram matrix), as its share of ``|W|^2`` and as the
    coupling of its rows ``|O O^T|_F / tr(O O^T)`` (which a diagonal Gram matrix loses); and the
    downstream accuracy. Each is a function of ``(M, W0, W)``, whose joint law the two samplers
    share."""
    rows = []
    for seed in range(seeds):
        family = make_task_family(D, R, T, np.random.default_rng([seed, 1, salt]))
        config = PretrainConfig(width=WIDTH, samples_per_task=N, sampler=sampler, dtype="float64")
        rng = np.random.default_rng([seed, 2, salt])
        W0 = train.initial_layer(WIDTH, D, rng, dtype="float64")
        trained = pretrain(family, config, rng, W0=W0)
        Q = np.linalg.qr(np.concatenate([family.M, W0.T], axis=1))[0]
        outside = trained.W - (trained.W @ Q) @ Q.T
        coupling = outside @ outside.T
        # Fresh samples and probes in the joint coordinates of M and the layer: the same law for
        # both samplers (as the studies probe under the reduced one).
        M, (W,) = joint_coordinates(family.M, trained.W)
        probed = family.in_coordinates(M)
        X, Y = probed.sample_tasks(0, T, N, (seed, salt, 7, 0), "per-task", np.float64)
        after, _ = loss_and_grad(X, Y, W, trained.b, trained.A, config.loss)
        accuracy = probe_accuracy(
            W, trained.b, probed, 20, np.random.default_rng([seed, 3, salt]), n_test=200, new_tasks=2
        )
        rows.append(
            (
                trained.history[-1]["subspace_distance"],
                trained.history[-1]["loss"],
                after,
                np.linalg.norm(trained.W) / config.lr,
                np.linalg.norm(outside) ** 2 / np.linalg.norm(trained.W) ** 2,
                np.linalg.norm(coupling) / np.trace(coupling),
                accuracy,
            )
        )
    return np.array(rows)


@pytest.fixture(scope="module")
def full():
    return _outcomes("full", FULL_SALT)


def _p_values(full, other):
    return {name: ks_2samp(full[:, j], other[:, j]).pvalue for j, name in enumerate(QUANTITIES)}


@pytest.mark.slow
def test_the_reduced_sampler_has_the_full_ones_distribution(full):
    p = _p_values(full, _outcomes("reduced", REDUCED_SALT))
    assert min(p.values()) > PASS_P, p


def _without_the_outside_term(gram, Q, key):
    return np.zeros((gram.shape[0], Q.shape[0]))


def _identity_for_the_gram(gram, Q, key):
    return outside_term(np.eye(gram.shape[0]), Q, key)


def _diagonal_of_the_gram(gram, Q, key):
    return outside_term(np.diag(np.diag(gram)), Q, key)


def _gram_scaled_by_one_and_a_half(gram, Q, key):
    return outside_term(1.5 * gram, Q, key)


@pytest.mark.parametrize(
    "broken, caught_by",
    [
        (_without_the_outside_term, ["subspace distance", "outside share", "downstream accuracy"]),
        (_identity_for_the_gram, ["subspace distance", "|gW|", "outside share", "downstream accuracy"]),
        (_diagonal_of_the_gram, ["outside coupling"]),
        (_gram_scaled_by_one_and_a_half, ["subspace distance", "outside share"]),
    ],
    ids=["no outside term", "identity Gram", "diagonal Gram", "Gram x 1.5"],
)
@pytest.mark.slow
def test_the_same_test_rejects_a_wrong_reduction(full, broken, caught_by, monkeypatch):
    monkeypatch.setattr(samplers, "outside_term", broken)
    p = _p_values(full, _outcomes("reduced", REDUCED_SALT))
    assert all(p[name] < REJECT_P for name in caught_by), p


def _conditional_moments(draws, d, k):
    """``E[O O^T] / (d - k)`` and ``E[O^T O]`` over the draws ``O (m, d)``."""
    left = sum(term @ term.T for term in draws) / (len(draws) * (d - k))
    right = sum(term.T @ term for term in draws) / len(draws)
    return left, right


def test_the_outside_term_has_the_conditional_law_of_D_T_X_perp():
    """For a fixed ``D`` (dead neurons included) and basis ``Q``: ``D^T X (I - Q Q^T)`` with Gaussian
    ``X`` has ``E[O O^T] = (d - k) D^T D`` and ``E[O^T O] = tr(D^T D) (I - Q Q^T)``. The draws from
    the Gram matrix alone match both, as does a direct Monte Carlo of the definition; the draws of
    an identity-shaped Gram matrix of the same trace do not."""
    rng = np.random.default_rng(0)
    d, k, m, n, draws = 12, 4, 5, 40, 4000
    Q = np.linalg.qr(rng.standard_normal((d, k)))[0]
    D = rng.standard_normal((n, m)) * (rng.random((n, m)) > 0.4)
    D[:, 0] = 0.0  # a dead neuron: a zero eigenvalue
    gram = D.T @ D
    P = np.eye(d) - Q @ Q.T
    ours = [outside_term(gram, Q, (9, 9, i, 2)) for i in range(draws)]
    direct = [D.T @ (rng.standard_normal((n, d)) @ P) for _ in range(draws)]
    isotropic = [outside_term(np.eye(m) * np.trace(gram) / m, Q, (9, 9, i, 2)) for i in range(draws)]
    tolerance = 6 * np.trace(gram) / np.sqrt(draws)  # a few Monte-Carlo standard errors
    for name, sample in (("ours", ours), ("direct", direct)):
        left, right = _conditional_moments(sample, d, k)
        assert np.abs(left - gram).max() < tolerance / np.sqrt(d - k), name
        assert np.abs(right - np.trace(gram) * P).max() < tolerance, name
        assert np.abs(np.mean([term @ Q for term in sample], axis=0)).max() < tolerance, name
    assert max(np.abs(term @ Q).max() for term in ours) < 1e-12  # exactly off span(Q)
    left, _ = _conditional_moments(isotropic, d, k)
    assert np.abs(left - gram).max() > 3 * tolerance / np.sqrt(d - k)  # three times the bound it must pass


def test_the_basis_holds_M_and_every_layer_even_when_they_are_dependent():
    rng = np.random.default_rng(1)
    family = make_task_family(40, 3, 2, rng)
    W = rng.standard_normal((6, 40))
    oracle = rng.standard_normal((4, 3)) @ family.M.T  # inside span(M): dependent columns
    Q = sampled_basis(family.M, W, oracle)
    assert Q.shape == (40, 3 + 6 + 4)
    np.testing.assert_allclose(Q.T @ Q, np.eye(Q.shape[1]), atol=1e-12)
    for rows in (family.M.T, W, oracle):
        np.testing.assert_allclose(rows @ Q @ Q.T, rows, atol=1e-12)
    np.testing.assert_allclose(np.abs(Q[:, :3].T @ family.M), np.eye(3), atol=1e-12)  # M first, up to sign


def test_a_basis_of_all_of_R_d_leaves_nothing_outside():
    """``r + width >= d``: the basis spans ``R^d``, the reduced draw is a rotation of the full one."""
    family = make_task_family(8, 3, 5, np.random.default_rng(2))
    Q = sampled_basis(family.M, np.random.default_rng(3).standard_normal((16, 8)))
    assert Q.shape == (8, 8)
    assert not outside_term(np.eye(16), Q, (1, 2, 3, 2)).any()
    config = PretrainConfig(width=16, samples_per_task=30, sampler="reduced", dtype="float64")
    trained = pretrain(family, config, np.random.default_rng(4))
    assert np.isfinite(trained.W).all() and 0 <= trained.history[-1]["subspace_distance"] <= 1


def test_the_oracle_layer_trains_under_the_reduced_sampler():
    """The oracle layer's rows lie in span(M): ``[M, W^T]`` is rank-deficient."""
    family = make_task_family(60, 3, 8, np.random.default_rng(5))
    W0 = train.oracle_layer(8, family.M, np.random.default_rng(6), dtype="float64")
    config = PretrainConfig(width=8, samples_per_task=50, sampler="reduced", dtype="float64", rounds=2)
    trained = pretrain(family, config, np.random.default_rng(7), W0=W0)
    assert np.isfinite(trained.W).all()


@pytest.mark.parametrize("budget_groups", [1, 2])
def test_reduced_rounds_are_bitwise_the_same_whatever_the_shards(budget_groups):
    T_tasks = 2 * shards.GROUP_TASKS + 3
    family = make_task_family(60, 3, T_tasks, np.random.default_rng(8))
    config = PretrainConfig(width=8, samples_per_task=20, rounds=2, sampler="reduced", bias=True, loss="logistic")
    assert config.sampler_for(60, 3) == "reduced"
    whole = pretrain(family, config, np.random.default_rng(9))
    budget = budget_groups * shards.GROUP_TASKS * shards.task_bytes(config, 60, 3)
    sharded = pretrain(family, config, np.random.default_rng(9), memory_budget=budget)
    assert len(shards.task_shards(T_tasks, config, 60, 3, budget)) > 1
    for name in ("W", "b", "A"):
        np.testing.assert_array_equal(getattr(sharded, name), getattr(whole, name))
    assert sharded.history == whole.history


def test_rows_drawn_in_slices_are_the_rows_of_one_draw():
    family = make_task_family(10, 2, 3, np.random.default_rng(10), noise=0.2)
    X, Y = family.sample_tasks(0, 3, 50, (1, 2, 3, 1), "per-task", np.float32)
    for row0, rows in ((0, 17), (17, 16), (33, 17)):
        Xs, Ys = family.sample_tasks(0, 3, rows, (1, 2, 3, 1), "per-task", np.float32, row0=row0)
        np.testing.assert_array_equal(Xs, X[:, row0 : row0 + rows])
        np.testing.assert_array_equal(Ys, Y[:, row0 : row0 + rows])


def test_slices_of_rows_give_the_one_slice_round_to_rounding(monkeypatch):
    family = make_task_family(20, 2, 5, np.random.default_rng(11))
    config = PretrainConfig(width=6, samples_per_task=90, head_steps=3, loss="logistic", dtype="float64")
    whole = pretrain(family, config, np.random.default_rng(12))
    monkeypatch.setattr(shards, "SLICE_VALUES", 20 * 25)  # slices of 25, 25, 25 and 15 rows
    assert shards.row_slices(90, 20)[-1] == (75, 15)
    sliced = pretrain(family, config, np.random.default_rng(12))
    np.testing.assert_allclose(sliced.W, whole.W, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(sliced.A, whole.A, rtol=1e-10, atol=1e-14)


def test_normals_are_the_shared_layouts_inputs():
    family = make_task_family(7, 2, 1, np.random.default_rng(13))
    X, _ = draw(family.M, family.V, None, 0.0, 0, 1, 33, (4, 5, 6, 2), True, np.float64)
    np.testing.assert_array_equal(normals((4, 5, 6, 2), 33, 7), X)


def test_auto_picks_the_reduced_sampler_where_it_is_cheaper():
    config = PretrainConfig(width=256)
    assert config.sampler_for(200, 5) == "full" and config.sampler_for(400, 5) == "reduced"
    assert PretrainConfig(width=256, layout="shared").sampler_for(10**5, 5) == "full"
    assert PretrainConfig(width=256, sampler="full").sampler_for(10**5, 5) == "full"


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"sampler": "reduced", "layout": "shared"}, "needs layout 'per-task'"),
        ({"sampler": "exact"}, "sampler must be one of"),
    ],
)
def test_bad_sampler_settings_are_refused(changes, words):
    with pytest.raises(ValueError, match=words):
        PretrainConfig(**changes)


def test_joint_coordinates_carry_the_joint_law_without_a_basis():
    """``(M^T x, W_1 x, W_2 x)`` and its coordinates' version have the same covariance (so the same
    Gaussian law), with ``k`` the rank: the oracle layer adds no coordinate."""
    rng = np.random.default_rng(14)
    family = make_task_family(50, 3, 1, rng)
    W = rng.standard_normal((6, 50)).astype(np.float32)
    oracle = rng.standard_normal((4, 3)) @ family.M.T
    M_c, (W_c, oracle_c) = joint_coordinates(family.M, W, oracle)
    assert M_c.shape == (9, 3) and W_c.shape == (6, 9) and oracle_c.shape == (4, 9)
    B = np.concatenate([family.M.T, W, oracle])
    B_c = np.concatenate([M_c.T, W_c, oracle_c])
    np.testing.assert_allclose(B_c @ B_c.T, B @ B.T, atol=1e-10)
    family.in_coordinates(M_c)  # orthonormal columns


def test_coordinates_that_lose_part_of_span_M_are_refused():
    family = make_task_family(20, 2, 1, np.random.default_rng(15))
    with pytest.raises(ValueError, match="orthonormal columns"):
        family.in_coordinates(np.ones((5, 2)))
    with pytest.raises(ValueError, match=r"\(k, r\) with r = 2"):
        family.in_coordinates(np.ones((5, 3)))


def test_a_new_sampler_is_one_class_and_one_entry(monkeypatch):
    """The registry is the one place a sampler lives: a new one (here the full sampler under
    another name, drawing the same) trains, sizes its memory, names itself in the report and is a
    choice of the command, with its help."""
    from mtrl_fast import cli
    from mtrl_fast.paper import report

    class Copy(samplers.Full):
        name = "copy"
        note = "the full sampler under another name"
        help = "the full one, renamed"

    monkeypatch.setitem(samplers.SAMPLERS, "copy", Copy())
    family = make_task_family(30, 3, 6, np.random.default_rng(16))
    runs = {
        name: pretrain(family, PretrainConfig(width=8, samples_per_task=40, sampler=name), np.random.default_rng(17))
        for name in ("full", "copy")
    }
    np.testing.assert_array_equal(runs["copy"].W, runs["full"].W)
    assert PretrainConfig(sampler="copy").sampler_for(10**5, 5) == "copy"
    assert report._sampler_note(["copy", "full"]) == "the full sampler under another name"
    with pytest.raises(ValueError, match="sampler must be one of .*'copy'"):
        PretrainConfig(sampler="exact")
    parser = cli.build_parser()
    assert getattr(parser.parse_args(["reproduce", "--sampler", "copy"]), "pretrain.sampler") == "copy"
    reproduce = parser._subparsers._group_actions[0].choices["reproduce"]
    assert "copy: the full one, renamed" in " ".join(reproduce.format_help().split())
