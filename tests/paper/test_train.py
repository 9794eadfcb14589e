"""Alternating pretraining: lowers the loss, learns the subspace with many tasks, is seeded."""

import os

import numpy as np
import pytest

import mtrl_fast
from helpers import run_python
from mtrl_fast.paper.metrics import subspace_distance
from mtrl_fast.paper.shards import GROUP_TASKS, task_bytes, task_shards
from mtrl_fast.paper.tasks import make_task_family
from mtrl_fast.paper.train import PretrainConfig, initial_layer, oracle_layer, pretrain


def _family(T, d=30, seed=0):
    return make_task_family(d, 3, T, np.random.default_rng([seed, T]))


def test_head_step_then_layer_step_lowers_the_loss():
    """Several rounds of small steps on logistic loss: the loss falls round after round."""
    family = _family(20)
    config = PretrainConfig(
        width=32,
        rounds=12,
        head_steps=3,
        head_lr=2.0,
        lr=2.0,
        weight_decay=0.0,
        loss="logistic",
        samples_per_task=200,
        dtype="float64",
    )
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
    config = PretrainConfig(
        width=16,
        samples_per_task=40,
        dtype="float64",
        head_lr=0.3,
        lr=0.7,
        weight_decay=0.5,
        bias=True,
        loss="logistic",
        sampler="full",  # the definition, on the inputs themselves
    )
    W0 = initial_layer(16, 30, np.random.default_rng(3), dtype="float64")
    trained = pretrain(family, config, np.random.default_rng(4), W0=W0)

    seed = [int(k) for k in np.random.default_rng(4).integers(0, 2**32, size=2)]  # the samples' seed
    A = np.zeros((5, 16))
    b = np.zeros(16)
    X, Y = family.sample_tasks(0, 5, 40, seed + [0, 0], "per-task", np.float64)  # round 0, head phase
    _, grads = mtrl_fast.loss_and_grad(X, Y, W0, b, A, "logistic")
    A = A - 0.3 * 5 * grads.A  # each task's head on its own mean loss
    X, Y = family.sample_tasks(0, 5, 40, seed + [0, 1], "per-task", np.float64)  # round 0, layer phase
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


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(width=0), "width"),
        (dict(rounds=0), "rounds"),
        (dict(loss="l1"), "loss"),
        (dict(lr=0.0), "lr"),
        (dict(weight_decay=-1.0), "weight_decay"),
        (dict(layout="mixed"), "layout"),
        (dict(dtype="float16"), "dtype"),
        (dict(samples_per_task=0), "samples_per_task"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PretrainConfig(**kwargs)


def test_width_below_r_is_refused():
    with pytest.raises(ValueError, match="width must be at least r"):
        pretrain(_family(2), PretrainConfig(width=2), np.random.default_rng(0))


def test_divergence_is_reported():
    config = PretrainConfig(
        width=8,
        rounds=30,
        head_lr=1e30,
        lr=1e30,
        weight_decay=0.0,
        loss="squared",
        samples_per_task=20,
        dtype="float32",
    )
    with np.errstate(all="ignore"), pytest.raises(FloatingPointError, match="diverged"):
        pretrain(_family(3), config, np.random.default_rng(0))


def _reversed_map(function, argument_lists):
    """Shards run in reverse order (as a cluster might finish them), results in shard order."""
    return [function(*arguments) for arguments in list(argument_lists)[::-1]][::-1]


@pytest.mark.parametrize("layout", ["per-task", "shared"])
def test_pretraining_is_bitwise_the_same_whatever_the_shards(layout):
    """Whatever the memory budget (one group per shard, two, a shard that ends mid-way, all at
    once) and wherever or in whatever order the shards run: the gradients are summed over the same
    fixed task groups in the same order. Before, shards of 10 and of 7 tasks gave different bits."""
    T = 3 * GROUP_TASKS + 5
    family = _family(T, d=12)
    config = PretrainConfig(
        width=16, samples_per_task=24, rounds=3, layout=layout, bias=True, loss="logistic", lr=0.5, weight_decay=0.1
    )
    group = GROUP_TASKS * task_bytes(config, family.d, family.r)
    whole = pretrain(family, config, np.random.default_rng(5))
    for budget, sizes in ((1, [16, 16, 16, 5]), (2 * group, [32, 21]), (3.5 * group, [48, 5]), (None, [T])):
        assert [count for _, count in task_shards(T, config, family.d, family.r, budget)] == sizes
        for map_shards in ({}, {"map_shards": _reversed_map}):
            sharded = pretrain(family, config, np.random.default_rng(5), memory_budget=budget, **map_shards)
            for name in ("W", "b", "A"):
                np.testing.assert_array_equal(getattr(sharded, name), getattr(whole, name), err_msg=f"{budget}")
            assert sharded.history == whole.history


def test_a_tasks_samples_do_not_depend_on_the_shard():
    family = _family(9)
    X, Y = family.sample_tasks(0, 9, 20, [7, 0, 0, 1])
    for first, count in ((0, 4), (4, 4), (8, 1)):
        Xs, Ys = family.sample_tasks(first, count, 20, [7, 0, 0, 1])
        np.testing.assert_array_equal(Xs, X[first : first + count])
        np.testing.assert_array_equal(Ys, Y[first : first + count])


MEMORY_SCRIPT = """
    import numpy as np
    from mtrl_fast.paper.tasks import make_task_family
    from mtrl_fast.paper.shards import task_bytes
    from mtrl_fast.paper.train import PretrainConfig, pretrain

    def rss(field):
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith(field + ":"))

    config = PretrainConfig(width=64, samples_per_task=1000)
    family = make_task_family(200, 5, 2000, np.random.default_rng(0))
    pretrain(make_task_family(200, 5, 4, np.random.default_rng(0)), config, np.random.default_rng(1))  # compile
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # the peak restarts from here
    before = rss("VmRSS")
    trained = pretrain(family, config, np.random.default_rng(1), memory_budget={budget})
    batch = 2000 * 1000 * 200 * 4
    print(batch, rss("VmHWM") - before, trained.history[-1]["subspace_distance"])
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="resets the peak through /proc")
def test_a_round_larger_than_the_memory_budget_runs_within_it():
    """2000 tasks of 1000 samples at d = 200: a 1.6 GB batch, trained within a 200 MB budget."""
    budget = 200 * 2**20
    result = run_python(MEMORY_SCRIPT.format(budget=budget))
    assert result.returncode == 0, result.stderr
    batch, peak, distance = (float(v) for v in result.stdout.split())
    assert batch > 7 * budget
    assert peak < 1.5 * budget, f"peak {peak / 2**20:.0f} MiB over a {budget / 2**20:.0f} MiB budget"
    assert distance < 0.5  # it learned: many tasks recover the subspace
