"""Synthetic tasks: labels depend only on M^T x; draws are seeded."""

import numpy as np
import pytest

from mtrl_fast.paper.tasks import make_task_family, orthonormal_basis, unit_vectors


@pytest.mark.parametrize("kind", ["linear", "relu-teacher"])
@pytest.mark.parametrize("layout", ["shared", "per-task"])
def test_labels_depend_only_on_the_projection(kind, layout):
    rng = np.random.default_rng(0)
    family = make_task_family(30, 4, 6, rng, kind=kind)
    X, Y = family.sample(200, rng, layout, np.float64)
    # Moving x orthogonally to span(M) never changes a label.
    noise = rng.standard_normal(X.shape)
    noise -= noise @ family.M @ family.M.T
    np.testing.assert_array_equal(family.labels(X + 10 * noise), Y)
    # Moving it inside span(M) does, for some points.
    inside = rng.standard_normal(X.shape[:-1] + (4,)) @ family.M.T
    assert (family.labels(X + 10 * inside) != Y).any()


def test_linear_labels_are_signs_of_the_task_projection():
    rng = np.random.default_rng(1)
    family = make_task_family(12, 3, 4, rng)
    X, Y = family.sample(50, rng, "shared", np.float64)
    np.testing.assert_array_equal(Y, np.where(family.V @ (X @ family.M).T >= 0, 1.0, -1.0))
    assert set(np.unique(Y)) == {-1.0, 1.0}
    np.testing.assert_array_equal(family.labels(np.zeros((1, 12))), np.ones((4, 1)))  # sign(0) = +1


def test_per_task_samples_are_labelled_by_their_own_task():
    rng = np.random.default_rng(2)
    family = make_task_family(10, 2, 3, rng)
    X, Y = family.sample(40, rng, "per-task", np.float64)
    assert X.shape == (3, 40, 10) and Y.shape == (3, 40)
    for t in range(3):
        np.testing.assert_array_equal(Y[t], family.with_tasks(family.V[t : t + 1]).labels(X[t])[0])


def test_draws_are_reproducible_and_seeds_differ():
    def draw(seed):
        rng = np.random.default_rng(seed)
        family = make_task_family(20, 3, 5, rng, kind="relu-teacher", noise=0.1)
        return family.M, family.sample(30, rng)

    (M1, (X1, Y1)), (M2, (X2, Y2)) = draw(7), draw(7)
    np.testing.assert_array_equal(M1, M2)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(Y1, Y2)
    assert not np.array_equal(draw(8)[0], M1)


def test_label_noise_flips_about_that_fraction():
    rng = np.random.default_rng(3)
    family = make_task_family(10, 2, 2, rng, noise=0.2)
    X, Y = family.sample(20000, rng, "shared", np.float64)
    flipped = np.mean(Y != family.labels(X))
    assert 0.18 < flipped < 0.22


def test_ground_truth_is_orthonormal_and_tasks_unit():
    rng = np.random.default_rng(4)
    M = orthonormal_basis(40, 6, rng)
    np.testing.assert_allclose(M.T @ M, np.eye(6), atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(unit_vectors(9, 6, rng), axis=1), 1.0)


def test_first_tasks_do_not_depend_on_how_many_are_drawn():
    """The recovery grid relies on this: T tasks are the first T of any larger draw."""
    small = make_task_family(20, 3, 4, np.random.default_rng(5))
    large = make_task_family(20, 3, 50, np.random.default_rng(5))
    np.testing.assert_array_equal(small.M, large.M)
    np.testing.assert_array_equal(small.V, large.V[:4])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(d=5, r=6, T=2), "r must be between"),
        (dict(d=5, r=2, T=0), "T must be at least 1"),
        (dict(d=5, r=2, T=2, kind="quadratic"), "kind must be one of"),
        (dict(d=5, r=2, T=2, noise=0.5), "noise must be in"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_task_family(rng=np.random.default_rng(0), **kwargs)
