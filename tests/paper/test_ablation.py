"""The order of the updates: the training orders as named choices of ``pretrain``, and the ablation
study that compares them, end to end; breaking the heads-first order changes the study's outcome."""

import json
from dataclasses import replace

import numpy as np
import pytest
from test_experiments import TINY

from mtrl_fast.paper import train
from mtrl_fast.paper.experiments import load_cell, plan, reproduce
from mtrl_fast.paper.studies import STUDIES
from mtrl_fast.paper.studies.ablation import AT_MOST
from mtrl_fast.paper.tasks import make_task_family
from mtrl_fast.paper.train import ORDERS, Order, PretrainConfig, pretrain

#: Small enough for a test, large enough that the orders differ as the study claims (T = 100 tasks).
SMALL = replace(
    TINY,
    studies=("ablation",),
    r=5,
    seeds=1,
    ablation_d=(50,),
    ablation_tasks=100,
    n_new=(20, 100),
    mechanism_points=100,
    pretrain=PretrainConfig(width=64),
)


def _trained(order, layout="per-task", rounds=1, A0=None, T=8, d=10):
    family = make_task_family(d, 3, T, np.random.default_rng(1))
    config = PretrainConfig(width=6, rounds=rounds, samples_per_task=40, layout=layout, sampler="full")
    heads = np.random.default_rng(2).standard_normal((T, 6)) / 6 if A0 is None else A0
    return pretrain(family, config, np.random.default_rng(3), order=order, A0=heads), heads


@pytest.mark.parametrize("layout", ["per-task", "shared"])
def test_each_order_moves_what_it_names(layout):
    heads_first, A0 = _trained("heads-first", layout)
    joint, _ = _trained("joint", layout)
    frozen, _ = _trained("frozen-heads", layout)
    layer_first, _ = _trained("layer-first", layout)
    # The heads take the same steps from the same start whether the layer sees them or not.
    np.testing.assert_array_equal(heads_first.A, joint.A)
    assert not np.array_equal(heads_first.A, A0)
    # The layer's gradient at the round's starting heads, not the stepped ones.
    assert not np.allclose(heads_first.W, joint.W)
    np.testing.assert_array_equal(frozen.A, A0.astype(np.float32))
    # One round: the shared layer first sees the starting heads, as the joint step and frozen heads do.
    np.testing.assert_array_equal(layer_first.W, joint.W)
    np.testing.assert_array_equal(frozen.W, joint.W)
    np.testing.assert_array_equal(layer_first.A, A0.astype(np.float32))  # its first round has no head step


def test_the_shared_layer_first_is_heads_first_one_layer_step_behind():
    """Over rounds, the shared layer first sees layer, heads, layer, heads: after its first round
    (no head step) the rounds are heads-first ones."""
    two, _ = _trained("layer-first", rounds=2)
    one, A0 = _trained("joint", rounds=1)
    assert not np.array_equal(two.W, one.W) and not np.array_equal(two.A, A0.astype(np.float32))


def test_orders_and_initial_heads_are_checked():
    family = make_task_family(10, 3, 4, np.random.default_rng(1))
    config = PretrainConfig(width=6, samples_per_task=20, sampler="full")
    with pytest.raises(ValueError, match="order must be one of heads-first, joint, layer-first, frozen-heads"):
        pretrain(family, config, np.random.default_rng(0), order="heads-last")
    with pytest.raises(ValueError, match=r"A0 must have shape \(T, width\) = \(4, 6\)"):
        pretrain(family, config, np.random.default_rng(0), A0=np.zeros((4, 5)))


def test_the_ablation_study_writes_its_records_claim_table_and_figure(tmp_path):
    rows = reproduce(SMALL, tmp_path, progress=False)
    cells = plan(SMALL)
    assert [c.name for c in cells] == ["ablation-d50-seed0"]
    document = json.loads((tmp_path / "results.json").read_text())
    records = document["ablation"]
    assert [r["order"] for r in records] == list(ORDERS)
    assert (tmp_path / "ablation.csv").read_text().splitlines()[0] == (
        "d,order,seed,subspace_distance,energy_outside,alignment,accuracy"
    )
    text = (tmp_path / "report.md").read_text()
    assert "## The order of the updates" in text and "![ablation.png](ablation.png)" in text
    assert (tmp_path / "ablation.png").is_file()
    (claim,) = rows
    assert claim["holds"] is True, claim
    assert claim["measured"].startswith("d=50: ")
    assert load_cell(tmp_path, cells[0], SMALL) is not None


def test_swapping_heads_first_and_the_joint_step_changes_the_outcome(tmp_path, monkeypatch):
    """Before: the study's claim holds. With the two orders' code swapped (heads first run as a joint
    step, and the other way round), the same study refuses it."""
    study = STUDIES["ablation"]
    cell = plan(SMALL)[0]
    right = study.claims(study.run(cell, SMALL, {}), SMALL)[0]
    monkeypatch.setitem(ORDERS, "heads-first", Order("heads-first", layer_sees_new_heads=False))
    monkeypatch.setitem(ORDERS, "joint", Order("joint"))
    swapped = study.claims(study.run(cell, SMALL, {}), SMALL)[0]
    assert right["holds"] is True and swapped["holds"] is False, (right, swapped)
    ratio = float(swapped["measured"].split("(")[1].split("x")[0])
    assert ratio > 1 / AT_MOST  # now the "joint" one concentrates


def test_every_order_is_a_named_choice_of_the_training_code():
    assert train.HEADS_FIRST in ORDERS and len(ORDERS) == 4
    assert all(isinstance(order, Order) and order.name == name for name, order in ORDERS.items())
