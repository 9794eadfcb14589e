"""The reproduction grid: what a run computes (:data:`Grid`, generated from the studies' parameters),
its cells (:func:`plan`) and what each cell's records depend on (:func:`settings_of`, :func:`fingerprint`)."""

import hashlib
import json
from dataclasses import asdict, dataclass, field, make_dataclass

import numpy as np

from .networks import AGGREGATION, SAMPLING
from .options import Option, setting
from .studies import DEFAULT_STUDIES, STUDIES, parameters_of
from .tasks import LABEL_KINDS
from .train import PretrainConfig


@dataclass(frozen=True)
class _Grid:
    """The fields every grid has; :data:`Grid` adds those its studies declare."""

    # The settings ``mtrl-fast reproduce`` takes (see mtrl_fast.paper.options): flags and help come from here.
    d: tuple[int, ...] = setting((50, 100, 200), "positive_ints", "input dimensions of the recovery study")
    r: int = setting(5, "positive_int", "dimension of the ground-truth subspace")
    tasks: tuple[int, ...] = setting((1, 2, 5, 10, 20, 50, 100), "positive_ints", "task counts T")
    seeds: int = setting(5, "positive_int", "repetitions of every cell")
    label_kind: str = setting("linear", "choice", "label family", flag="--labels", choices=LABEL_KINDS)
    noise: float = setting(0.0, "probability_below_half", "label-flip probability, in [0, 0.5)")
    base_seed: int = setting(0, "nonnegative_int", "the seed every cell's generators start from")
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    studies: tuple[str, ...] = setting(
        DEFAULT_STUDIES, "names", "the studies to run, comma-separated", choices=lambda: tuple(STUDIES)
    )

    def __post_init__(self):
        unknown = [name for name in self.studies if name not in STUDIES]
        if unknown or not self.studies or len(set(self.studies)) != len(self.studies):
            raise ValueError(f"studies must be distinct names from {tuple(STUDIES)}; got {self.studies}")
        for name in ("d", "tasks"):
            values = getattr(self, name)
            if not all(isinstance(v, (int, np.integer)) and v >= 1 for v in values):
                raise ValueError(f"{name} must hold positive integers; got {values}")
        if any(d < self.r for d in self.d):
            raise ValueError(f"every d must be at least r = {self.r}")
        if self.pretrain.width < self.r:
            raise ValueError(f"width must be at least r = {self.r}; got {self.pretrain.width}")
        for name in ("seeds", "r"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1; got {getattr(self, name)}")
        chosen = {p.name for p in parameters_of(STUDIES[name] for name in self.studies)}
        missing = sorted(chosen - set(self.__dataclass_fields__))
        if missing:
            raise ValueError(
                f"the grid has no field for the parameters {missing}: register their study in STUDIES before "
                "mtrl_fast.paper.grid is imported (the grid's fields are derived from the registry then)"
            )
        for parameter in PARAMETERS:
            # The "at least r" rules bind only the parameters of the studies that run.
            problem = parameter.problem(getattr(self, parameter.name), self.r if parameter.name in chosen else 0)
            if problem:
                raise ValueError(problem)
        for name in self.studies:
            problem = STUDIES[name].problem(self)
            if problem:
                raise ValueError(problem)

    def to_dict(self):
        return asdict(self)


_GRID_DOC = """What a reproduction run computes. The defaults are the full grid; :data:`QUICK` is smaller.

Its fields are the ones every grid has and those the studies declare (``Study.parameters``): a new
study's parameters become fields here, and options of ``mtrl-fast reproduce``, by its entry in
``STUDIES`` alone.

Attributes
----------
d : tuple of int
    Input dimensions of the recovery and mechanism studies.
r : int
    Dimension of the ground-truth subspace.
tasks : tuple of int
    Task counts ``T`` of the recovery and mechanism studies.
seeds : int
    Independent repetitions of every cell.
label_kind : {"linear", "relu-teacher"}
noise : float
    Label-flip probability.
base_seed : int
    Seed every cell's generator starts from.
pretrain : PretrainConfig
studies : tuple of str
    The studies to run, from ``mtrl_fast.paper.studies.STUDIES``.
"""


def _grid_class(studies):
    """``Grid``: the common fields, then every parameter the ``studies`` declare, with its default."""
    studies = tuple(studies)
    parameters = parameters_of(studies)

    def option(p):
        owners = [study.name for study in studies if p in study.parameters]
        note = f"stud{'ies' if len(owners) > 1 else 'y'}: {', '.join(owners)}"
        return Option("positive_ints" if p.kind == "ints" else "positive_int", p.help, note=note)

    fields = [
        (p.name, tuple[int, ...] if p.kind == "ints" else int, field(default=p.default, metadata={"option": option(p)}))
        for p in parameters
    ]
    doc = _GRID_DOC + "".join(
        f"{p.name} : {'tuple of int' if p.kind == 'ints' else 'int'}\n    {p.help[0].upper() + p.help[1:]} "
        f"(default {p.default}; option ``{p.flag}``).\n"
        for p in parameters
    )
    grid = make_dataclass("Grid", fields, bases=(_Grid,), frozen=True, namespace={"__doc__": doc})
    grid.__module__ = __name__  # where pickling (a worker process, a Dask worker) finds it
    return grid


#: The parameters of every registered study (``Study.parameters``), each once.
PARAMETERS = parameters_of(STUDIES.values())
Grid = _grid_class(STUDIES.values())


#: The quick grid: every default study small, and the ablation and the phase diagram (which a full
#: run adds with ``--studies``) at the quick ``d``.
QUICK = Grid(
    d=(50, 200),
    tasks=(1, 5, 20, 100),
    seeds=2,
    downstream_d=(50, 200),
    n_new=(20, 100),
    ablation_d=(50, 200),
    phase_d=(50, 200),
    phase_tasks=(1, 5, 20, 100),
    phase_samples=(20, 100, 500),
    studies=(*DEFAULT_STUDIES, "ablation", "phase"),
)


def plan(grid):
    """All cells of ``grid``, study by study, the largest last within each so early results come fast."""
    return [cell for name in grid.studies for cell in STUDIES[name].cells(grid)]


def settings_of(cell, grid):
    """What a cell's result depends on besides its coordinates: it is recomputed when these change."""
    study = STUDIES[cell.study]
    config = study.pretrain_config(cell, grid)
    settings = {
        "r": grid.r,
        "label_kind": grid.label_kind,
        "noise": grid.noise,
        "base_seed": grid.base_seed,
        "pretrain": grid.pretrain.to_dict(),
        "sampling": SAMPLING,
        "aggregation": AGGREGATION,
        "sampler": config.sampler_for(cell.d, grid.r),
    }
    settings.update(study.settings(grid))
    return settings


def fingerprint(cell, grid):
    text = json.dumps(settings_of(cell, grid), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
