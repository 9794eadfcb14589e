"""What every study shares: the cell, the study's interface and its parameters, and the helpers its
parts use."""

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..keys import CellKey, Salt
from ..metrics import probe_accuracy


@dataclass(frozen=True)
class Cell:
    """One independent unit of work of a study, at its coordinates."""

    study: str
    d: int
    repetition: int  # 0 .. grid.seeds - 1: which draw of the cell's ground truth and generators
    T: int | None = None  # the recovery and mechanism studies' task count
    width: int | None = None  # the width study's neurons

    @property
    def name(self):
        """The cell's name: its stored file's, and what progress shows."""
        T = "" if self.T is None else f"-T{self.T}"
        width = "" if self.width is None else f"-m{self.width}"
        return f"{self.study}-d{self.d}{T}{width}-seed{self.repetition}"

    def stored(self) -> dict[str, Any]:
        """The cell as its file and its records name it: the repetition is their ``seed``."""
        return {"study": self.study, "d": self.d, "seed": self.repetition, "T": self.T, "width": self.width}

    def random_key(self, grid) -> CellKey:
        """The key of every generator the cell draws from: the grid's base seed, ``d`` and the repetition."""
        return CellKey(grid.base_seed, self.d, self.repetition)


@dataclass(frozen=True)
class Parameter:
    """A setting a study adds to the grid: a field of ``grid.Grid`` and an option of ``mtrl-fast
    reproduce`` (``--name-with-dashes``), both generated from the studies that declare it.

    Attributes
    ----------
    name : str
        The grid's field.
    kind : {"int", "ints"}
        One integer, or a comma-separated list of them (a tuple on the grid).
    default : int or tuple of int
    help : str
        What it is, for ``--help`` and the grid's documentation.
    minimum : int
        The least value allowed (of each value, for ``"ints"``).
    at_least_r : bool
        Each value must be at least the subspace's dimension ``r`` (an input dimension, a width).
    coordinate : bool
        Its values are the study's cell coordinates (which cells exist), not a setting each cell's
        records depend on: kept out of the cells' fingerprints.
    """

    name: str
    kind: str
    default: Any
    help: str
    minimum: int = 1
    at_least_r: bool = False
    coordinate: bool = False

    @property
    def flag(self):
        return "--" + self.name.replace("_", "-")

    def problem(self, value, r):
        """Why ``value`` does not fit (a sentence naming the field), or ``None``."""
        values = value if self.kind == "ints" else (value,)
        if self.kind == "ints" and not isinstance(value, tuple):
            return f"{self.name} must be a tuple of integers; got {value!r}"
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            return f"{self.name} must hold integers; got {value!r}"
        if any(v < self.minimum for v in values):
            return f"{self.name} values must be at least {self.minimum}; got {value!r}"
        if self.at_least_r and any(v < r for v in values):
            return f"every value of {self.name} must be at least r = {r}; got {value!r}"
        return None


def parameters_of(studies):
    """The parameters the ``studies`` declare, each once, in the order the studies name them."""
    found = {}
    for study in studies:
        for parameter in study.parameters:
            known = found.setdefault(parameter.name, parameter)
            if known != parameter:
                raise ValueError(f"two studies declare the parameter {parameter.name} differently")
    return list(found.values())


class Study:
    """A study of the reproduction: its cells, what each computes, its records and what the report
    says of them, and the grid parameters it adds (:class:`Parameter`). Register an instance in
    :data:`mtrl_fast.paper.studies.STUDIES`.

    Attributes
    ----------
    name : str
        The study's name: the ``study`` of its cells, the key of its records.
    fields : dict
        Each record's fields and their types (checked when a stored cell is loaded).
    finite : frozenset
        The fields that must be finite.
    title : str
        One line for ``--help`` and the report.
    parameters : tuple of Parameter
        The grid's fields (and the command's options) the study adds.
    """

    name = ""
    fields: dict[str, type] = {}
    finite: frozenset[str] = frozenset()
    title = ""
    parameters: tuple[Parameter, ...] = ()

    def problem(self, grid):
        """Why ``grid`` does not fit this study beyond its parameters' own rules (a sentence), or
        ``None``; checked with the grid, before any work starts."""
        return None

    def cells(self, grid):
        """The study's cells of ``grid``, cheapest first (early results come fast)."""
        raise NotImplementedError

    def run(self, cell, grid, shard_options):
        """Compute ``cell``: a list of records (``shard_options`` go to ``train.pretrain``)."""
        raise NotImplementedError

    def records_per_cell(self, cell, grid):
        raise NotImplementedError

    def settings(self, grid):
        """The grid's settings the study's records depend on besides the shared ones: by default its
        parameters that are not cell coordinates."""
        return {
            p.name: list(getattr(grid, p.name)) if p.kind == "ints" else getattr(grid, p.name)
            for p in self.parameters
            if not p.coordinate
        }

    def pretrain_config(self, cell, grid):
        """The pretraining settings of ``cell`` (the grid's, unless the study varies them)."""
        return grid.pretrain

    def tasks(self, cell, grid):
        """``T`` of the largest pretraining the cell runs (sizes its shards)."""
        raise NotImplementedError

    def probe_layers(self, cell, grid):
        """First layers the cell probes at once (their joint basis sizes the reduced probes)."""
        return 0

    def claims(self, records, grid):
        """The paper's claims that the study's records test: ``claim``, ``measured``,
        ``threshold`` and a computed ``holds``; a claim the grid cannot test is a
        :func:`not_evaluated` row (``holds`` None, with the reason), never left out."""
        return []

    def tables(self, records, grid):
        """The report's Markdown sections of the study's numbers."""
        return []

    def figures(self, records, grid, plt, stage):
        """Write the study's figures to ``stage(name)`` with ``plt``; returns their names."""
        return []


def not_evaluated(claim, threshold, reason):
    """A claim the grid cannot test: reported with its reason, never dropped nor judged on other cells.
    ``holds`` is ``None``; ``mtrl-fast reproduce --strict`` fails on it unless told to allow it."""
    return {"claim": claim, "measured": f"not evaluated: {reason}", "threshold": threshold, "holds": None}


def grid_values(values):
    """``values`` as the claims' reasons quote them: ``1, 100``."""
    return ", ".join(str(v) for v in values)


def mean(records, value, **where):
    """Mean of ``value`` over the records matching ``where`` (NaN when none does)."""
    picked = [r[value] for r in records if all(r[k] == v for k, v in where.items())]
    return float(np.mean(picked)) if picked else float("nan")


def nearest(values, target):
    return min(values, key=lambda v: (abs(v - target), v))


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def log_axis(ax, values):
    """Log-scaled x axis with a tick at each grid value, labelled plainly."""
    ax.set_xscale("log")
    ax.set_xticks(list(values))
    ax.set_xticklabels([str(v) for v in values])
    ax.minorticks_off()


def saved(fig, plt, stage, name):
    """Write ``fig`` as PNG to ``stage(name)``, close it, and return ``name``."""
    fig.tight_layout()
    fig.savefig(stage(name), dpi=120, format="png")
    plt.close(fig)
    return name


def seen_by(cell, grid, config, task_family, layers):
    """``(task_family, layers)`` as the cell measures them, as its sampler says (under the reduced
    sampler in the joint coordinates of ``M`` and all the layers, name -> ``(W, b)``)."""
    return config.sampler_at(cell.d, grid.r).measured(task_family, layers)


#: What every probing study reads: how the probes and the multi-task features they probe are made.
PROBE_PARAMETERS: tuple[Parameter, ...] = (
    Parameter("n_new", "ints", (10, 20, 50, 100, 200), "samples of a new task for the probe, e.g. 10,20,50", minimum=2),
    Parameter("downstream_tasks", "int", 100, "T of the multi-task features probed downstream"),
    Parameter("n_test", "int", 2000, "test samples per new task"),
    Parameter("probe_tasks", "int", 5, "new tasks each downstream accuracy averages over"),
)


class ProbeStudy(Study):
    """A study that probes first layers on new tasks at each of the grid's ``n_new``: its records are
    its cell's coordinates (:meth:`coordinates`), ``n_new``, ``features`` (one of :attr:`features`),
    ``seed`` and ``accuracy``."""

    features: tuple[str, ...] = ()
    finite = frozenset({"accuracy"})
    parameters: tuple[Parameter, ...] = PROBE_PARAMETERS

    def records_per_cell(self, cell, grid):
        return len(grid.n_new) * len(self.features)

    def tasks(self, cell, grid):
        return grid.downstream_tasks

    def probe_layers(self, cell, grid):
        return len(self.features)

    def coordinates(self, cell):
        """The cell's coordinates that open each record."""
        return {"d": cell.d}

    def probe(self, cell, grid, config, task_family, layers, key):
        """Probe every layer of ``layers`` (name -> ``(W, b)``) at each ``n_new``: the same new tasks
        and samples for every layer (a paired comparison), drawn by ``key``'s probe generator."""
        from .. import clock

        task_family, layers = seen_by(cell, grid, config, task_family, layers)
        records = []
        for n_new in grid.n_new:
            for name, (W, b) in layers.items():
                probe_rng = key.generator(Salt.PROBE, n_new)
                with clock.part("probe"):
                    accuracy = probe_accuracy(
                        W, b, task_family, n_new, probe_rng, n_test=grid.n_test, new_tasks=grid.probe_tasks
                    )
                records.append(
                    {
                        **self.coordinates(cell),
                        "n_new": n_new,
                        "features": name,
                        "seed": cell.repetition,
                        "accuracy": accuracy,
                    }
                )
        return records
