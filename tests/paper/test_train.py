"""Alternating pretraining: lowers the loss, learns the subspace with many tasks, is seeded."""
import numpy as np
import pytest

import mtrl_fast

from mtrl_fast.paper.metrics import subspace_distance
from mtrl_fast.paper.tasks import make_task_family
from mtrl_fast.paper.train import PretrainConfig, initial_layer, oracle_layer, pretrain


def _family(T, d=30, seed=0):
    return make_task_family(d, 3, T, np.random.default_rng([seed, T]))


def test_head_step_then_layer_step_lowers_the_loss():
    """Several rounds of small steps on logistic loss: the loss falls round after round."""
    family = _family(20)
    config = PretrainConfig(width=32, rounds=12, head_steps=3, head_lr=2.0, lr=2.0, weight_decay=0.0,
                            loss="logistic", samples_per_task=200, dtype="float64")
    trained = pretrain(family, config, np.random.default_rng(1))
    losses = [h["loss"] for h in trained.history]
    assert losses[0] < np.log(2)  # below the zero-head loss: the first head steps already helped
    assert losses[-1] < 0.8 * losses[0]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


def test_many_tasks_recover_the_subspace_and_one_task_does_not():
    config = PretrainConfig(width=64, samples_per_task=150)
    many = pretrain(_family(60), config, np.random.default_rng(2))
    one = pretrain(_family(1), config, np.random.default_rng(2))
    assert many.history[-1]["subspace_distance"] < 0.5
    assert many.history[-1]["energy_outside"] < 0.15
    assert one.history[-1]["subspace_distance"] > 0.9


def test_one_round_is_heads_first_then_the_layer_step():
    """A round, replayed by hand: head step from zero heads on fresh samples, then one step of W
    with weight decay on other fresh samples, all gradients from loss_and_grad."""
    family = _family(5)
    config = PretrainConfig(width=16, samples_per_task=40, dtype="float64", head_lr=0.3, lr=0.7,
                            weight_decay=0.5, bias=True, loss="logistic")
    W0 = initial_layer(16, 30, np.random.default_rng(3), dtype="float64")
    trained = pretrain(family, config, np.random.default_rng(4), W0=W0)

    rng = np.random.default_rng(4)
    A = np.zeros((5, 16))
    b = np.zeros(16)
    X, Y = family.sample(40, rng, "per-task", np.float64)
    _, grads = mtrl_fast.loss_and_grad(X, Y, W0, b, A, "logistic")
    A = A - 0.3 * 5 * grads.A  # each task's head on its own mean loss
    X, Y = family.sample(40, rng, "per-task", np.float64)
    value, grads = mtrl_fast.loss_and_grad(X, Y, W0, b, A, "logistic")
    np.testing.assert_allclose(trained.A, A, rtol=1e-12)
    np.testing.assert_allclose(trained.W, (1 - 0.7 * 0.5) * W0 - 0.7 * grads.W, rtol=1e-12)
    np.testing.assert_allclose(trained.b, -0.7 * grads.b, rtol=1e-12)
    assert trained.history[0]["loss"] == pytest.approx(value)


def test_seeded_runs_are_identical():
    family = _family(8)
    config = PretrainConfig(width=16, rounds=2, samples_per_task=30, bias=True)
    a = pretrain(family, config, np.random.default_rng(5))
    b = pretrain(family, config, np.random.default_rng(5))
    np.testing.assert_array_equal(a.W, b.W)
    np.testing.assert_array_equal(a.b, b.b)
    assert a.history == b.history


@pytest.mark.parametrize("layout", ["shared", "per-task"])
def test_both_layouts_and_bias_train(layout):
    config = PretrainConfig(width=24, samples_per_task=60, layout=layout, bias=True, loss="hinge")
    trained = pretrain(_family(10), config, np.random.default_rng(6))
    assert trained.W.shape == (24, 30) and trained.b.shape == (24,) and trained.A.shape == (10, 24)
    assert trained.W.dtype == np.float32


def test_baseline_layers():
    rng = np.random.default_rng(7)
    family = _family(2)
    W = initial_layer(50, 30, rng, scale=2.0)
    np.testing.assert_allclose(np.linalg.norm(W, axis=1), 2.0, rtol=1e-6)
    assert subspace_distance(oracle_layer(50, family.M, rng), family.M) < 1e-3


@pytest.mark.parametrize("kwargs, match", [
    (dict(width=0), "width"), (dict(rounds=0), "rounds"), (dict(loss="l1"), "loss"),
    (dict(lr=0.0), "lr"), (dict(weight_decay=-1.0), "weight_decay"), (dict(layout="mixed"), "layout"),
    (dict(dtype="float16"), "dtype"), (dict(samples_per_task=0), "samples_per_task"),
])
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PretrainConfig(**kwargs)


def test_width_below_r_is_refused():
    with pytest.raises(ValueError, match="width must be at least r"):
        pretrain(_family(2), PretrainConfig(width=2), np.random.default_rng(0))


def test_divergence_is_reported():
    config = PretrainConfig(width=8, rounds=30, head_lr=1e30, lr=1e30, weight_decay=0.0, loss="squared",
                            samples_per_task=20, dtype="float32")
    with np.errstate(all="ignore"), pytest.raises(FloatingPointError, match="diverged"):
        pretrain(_family(3), config, np.random.default_rng(0))
