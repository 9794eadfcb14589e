"""What every random draw of the paper's system is keyed by, named once.

Two levels, each one small type built at the top and passed down:

- :class:`CellKey`, ``(base seed, d, repetition)``: a cell's NumPy generators. The ground truth of
  ``(d, repetition)`` comes from the key alone; every other generator also takes a :class:`Salt`,
  which names what it draws (and, for some, a coordinate such as ``T`` or the width).
- :class:`DrawKey`, ``(seed0, seed1, round, phase)``: a pretraining run's compiled Philox draws. The
  two seed words come from the run's generator, the round and the :class:`Phase` from training.

The numbers below are part of every stored record's bits: they are written here once, and never
renumbered.
"""

from dataclasses import dataclass, replace
from enum import IntEnum

import numpy as np

_WORD = 2**32


class Salt(IntEnum):
    """Which of a cell's generators (the last word of its seed)."""

    #: A pretrained network: its initial layer and its samples' seed (coordinate: ``T``).
    NETWORK = 0
    #: The downstream study's random and oracle layers (coordinate: 0).
    DOWNSTREAM_BASELINES = 1
    #: A probe's new tasks and samples (coordinate: ``n_new``).
    PROBE = 2
    #: The width study's network and random layer (coordinate: the width).
    WIDTH = 3
    # 4 was the mechanism study's own pretraining, before the studies shared their networks.
    #: The mechanism study's random and oracle layers (coordinate: 0).
    MECHANISM_BASELINES = 5
    #: The mechanism study's held-out points (no coordinate).
    MECHANISM_POINTS = 6
    #: The tasks of the mechanism study's label-agreement kernel (no coordinate).
    AGREEMENT_TASKS = 7
    #: The ablation study's networks: the initial layer and the samples' seed, the same for every order.
    ABLATION = 8
    #: The ablation study's initial heads, the same for every order (no coordinate).
    ABLATION_HEADS = 9
    #: The phase diagram's networks: the initial layer and the samples' seed (coordinate: ``r``).
    PHASE = 10
    #: The phase diagram's ground truth of each subspace dimension (coordinate: ``r``).
    PHASE_TRUTH = 11


class Phase(IntEnum):
    """Which draw of a pretraining round (the last word of a :class:`DrawKey`)."""

    #: The samples of the head steps.
    HEADS = 0
    #: The samples of the first-layer step.
    FIRST_LAYER = 1
    #: The reduced sampler's standard normal ``G`` of the gradient's part outside its basis.
    OUTSIDE = 2


def _check_words(name, values, limit=None):
    for field, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"{name}.{field} must be an integer; got {value!r}")
        if value < 0 or (limit is not None and value >= limit):
            bound = "a non-negative integer" if limit is None else "an integer in [0, 2**32)"
            raise ValueError(f"{name}.{field} must be {bound}; got {value}")


@dataclass(frozen=True)
class CellKey:
    """The generators of one cell: the grid's base seed, the input dimension and the repetition
    (from 0 to the grid's ``seeds`` less one)."""

    base_seed: int
    d: int
    repetition: int

    def __post_init__(self):
        _check_words("CellKey", {"base_seed": self.base_seed, "d": self.d, "repetition": self.repetition})

    def truth(self) -> np.random.Generator:
        """The generator of the ground truth of ``(d, repetition)``: the subspace ``M`` and the task
        vectors, row by row (so the first ``T`` tasks are the same for every ``T``)."""
        return np.random.default_rng([self.base_seed, self.d, self.repetition])

    def generator(self, salt: Salt, coordinate: int | None = None) -> np.random.Generator:
        """The generator that draws ``salt``'s values, at ``coordinate`` where it has one."""
        words = [self.base_seed, self.d, self.repetition]
        if coordinate is not None:
            _check_words("CellKey.generator", {"coordinate": coordinate})
            words.append(int(coordinate))
        return np.random.default_rng([*words, Salt(salt).value])


@dataclass(frozen=True)
class DrawKey:
    """What one compiled draw of a pretraining run is keyed by: the run's two seed words, the round
    and the :class:`Phase`, each a 32-bit word (checked here, once, when the key is made)."""

    seed0: int
    seed1: int
    round: int = 0
    phase: int = Phase.HEADS

    def __post_init__(self):
        words = {"seed0": self.seed0, "seed1": self.seed1, "round": self.round, "phase": self.phase}
        _check_words("DrawKey", words, limit=_WORD)

    @classmethod
    def from_generator(cls, rng: np.random.Generator) -> "DrawKey":
        """A run's key at round 0: two seed words drawn from ``rng``."""
        seed0, seed1 = (int(word) for word in rng.integers(0, _WORD, size=2))
        return cls(seed0, seed1)

    @classmethod
    def of(cls, key) -> "DrawKey":
        """``key`` as a :class:`DrawKey`: one already, or the four words ``(seed0, seed1, round, phase)``."""
        if isinstance(key, cls):
            return key
        try:
            words = [int(word) for word in key]
            if len(words) == 4:
                return cls(*words)  # checks each word
        except (TypeError, ValueError):
            pass
        raise ValueError(f"key must be four integers in [0, 2**32): (seed0, seed1, round, phase); got {key!r}")

    def at(self, *, round: int | None = None, phase: Phase | None = None) -> "DrawKey":
        """The same run's key at another round or phase."""
        changes = {name: value for name, value in (("round", round), ("phase", phase)) if value is not None}
        return replace(self, **changes)

    def words(self) -> tuple[int, int, int, int]:
        """``(seed0, seed1, round, phase)`` as plain integers."""
        return int(self.seed0), int(self.seed1), int(self.round), int(self.phase)
