"""The random keys: every generator's seed words are the ones the stored records were drawn with, and a
bad key is refused where it is made."""

import numpy as np
import pytest

from mtrl_fast.paper import sampling
from mtrl_fast.paper.keys import CellKey, DrawKey, Phase, Salt

# The seed words each generator had before the keys were typed: the records' bits depend on them.
HISTORIC = [
    (Salt.NETWORK, 20, [7, 50, 2, 20, 0]),
    (Salt.DOWNSTREAM_BASELINES, 0, [7, 50, 2, 0, 1]),
    (Salt.PROBE, 100, [7, 50, 2, 100, 2]),
    (Salt.WIDTH, 64, [7, 50, 2, 64, 3]),
    (Salt.MECHANISM_BASELINES, 0, [7, 50, 2, 0, 5]),
    (Salt.MECHANISM_POINTS, None, [7, 50, 2, 6]),
    (Salt.AGREEMENT_TASKS, None, [7, 50, 2, 7]),
]


@pytest.mark.parametrize("salt, coordinate, words", HISTORIC)
def test_a_cells_generators_keep_their_seed_words(salt, coordinate, words):
    drawn = CellKey(7, 50, 2).generator(salt, coordinate).integers(0, 2**63, size=4)
    np.testing.assert_array_equal(drawn, np.random.default_rng(words).integers(0, 2**63, size=4))


def test_the_ground_truth_is_keyed_by_the_cell_alone():
    drawn = CellKey(7, 50, 2).truth().standard_normal(3)
    np.testing.assert_array_equal(drawn, np.random.default_rng([7, 50, 2]).standard_normal(3))


def test_salts_and_phases_are_numbered_once():
    assert len({int(s) for s in Salt}) == len(Salt) and 4 not in {int(s) for s in Salt}  # 4: retired
    assert [int(p) for p in Phase] == [0, 1, 2]


@pytest.mark.parametrize(
    "fields, error",
    [((-1, 5, 0), ValueError), ((0, 5.0, 0), TypeError), ((0, 5, True), TypeError)],
)
def test_a_bad_cell_key_is_refused(fields, error):
    with pytest.raises(error, match="CellKey"):
        CellKey(*fields)
    with pytest.raises(ValueError, match="coordinate"):
        CellKey(0, 5, 0).generator(Salt.PROBE, -3)


def test_a_draw_key_moves_to_a_round_and_a_phase():
    rng = np.random.default_rng(4)
    key = DrawKey.from_generator(rng)
    assert key.words()[:2] == tuple(int(w) for w in np.random.default_rng(4).integers(0, 2**32, size=2))
    moved = key.at(round=3).at(phase=Phase.OUTSIDE)
    assert moved.words() == (key.seed0, key.seed1, 3, 2)
    assert DrawKey.of(moved) is moved and DrawKey.of([*moved.words()]) == moved


@pytest.mark.parametrize("fields", [(2**32, 0, 0, 0), (0, 0, -1, 0), (0, 0, 0, 2**32)])
def test_a_bad_draw_key_is_refused_where_it_is_made(fields):
    with pytest.raises(ValueError, match="DrawKey"):
        DrawKey(*fields)
    with pytest.raises(ValueError, match="key must be four integers"):
        DrawKey.of(fields)


def test_a_draw_key_and_its_words_draw_the_same():
    key = DrawKey(1, 2, 3, Phase.FIRST_LAYER)
    np.testing.assert_array_equal(sampling.normals(key, 5, 9), sampling.normals((1, 2, 3, 1), 5, 9))
