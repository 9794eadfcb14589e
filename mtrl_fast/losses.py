"""The losses, in one table, and the names of the layouts and dtypes that the API, the paper's code,
the benchmarks and the CLI share.

Each loss is a function of the prediction ``f`` and the label ``y``; ``slope`` is its derivative
with respect to ``f``. :data:`TABLE` holds, for each loss, everything the package knows of it: its
name, its code in the compiled kernels (fixed in its row), whether its labels are -1/+1, its formula
(written once over an array library's ``softplus`` and ``relu``, so NumPy, PyTorch and JAX run the
same formula), its NumPy derivative and its cost in the kernels. The kernels carry a scalar twin of
each formula (``mtrl_fast._kernels._losses``), tested against this module; adding a loss means a row
here and a branch there.
"""

from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike


@dataclass(frozen=True)
class Loss:
    """One per-example loss.

    Attributes
    ----------
    name : str
    code : int
        The id the compiled kernels receive and branch on (``mtrl_fast._kernels._losses``), fixed
        here: a row's position in :data:`TABLE` means nothing.
    classification : bool
        Labels must be -1 or +1.
    formula : callable
        ``formula(ops, f, y)``: the per-example loss with ``ops.softplus`` (``log(1 + exp(z))``)
        and ``ops.relu`` (``max(z, 0)``) of an array library (:data:`NUMPY_OPS`, or PyTorch's and
        JAX's where those run it).
    slope : callable
        ``slope(f, y)``: the derivative in ``f``, in NumPy.
    cost : tuple of int
        Work of one evaluation in the kernels, in elements of a plain elementwise pass, for float32
        and float64.
    """

    name: str
    code: int
    classification: bool
    formula: Callable[[Any, Any, Any], Any]
    slope: Callable[[np.ndarray, np.ndarray], np.ndarray]
    cost: tuple[int, int] = (1, 1)


def _logistic_slope(f: np.ndarray, y: np.ndarray) -> np.ndarray:
    # -y / (1 + exp(y f)) == -y * sigmoid(-y f), written so that nothing overflows.
    return -y * np.exp(-np.logaddexp(0.0, y * f))


#: Every loss.
TABLE = (
    Loss("squared", 0, False, lambda ops, f, y: 0.5 * (f - y) ** 2, lambda f, y: f - y),
    Loss("logistic", 1, True, lambda ops, f, y: ops.softplus(-y * f), _logistic_slope, cost=(8, 24)),
    Loss("hinge", 2, True, lambda ops, f, y: ops.relu(1.0 - y * f), lambda f, y: np.where(y * f < 1.0, -y, 0.0)),
    Loss("correlation", 3, True, lambda ops, f, y: -y * f, lambda f, y: np.zeros_like(f) - y),
)
_BY_NAME = {row.name: row for row in TABLE}
_BY_CODE = {row.code: row for row in TABLE}
if len(_BY_NAME) != len(TABLE) or len(_BY_CODE) != len(TABLE) or min(_BY_CODE) < 0:
    raise ImportError("every loss needs a name and a non-negative kernel code of its own")

#: Loss names, in the table's order.
LOSSES = tuple(_BY_NAME)

#: Losses whose labels must be -1 or +1.
CLASSIFICATION_LOSSES = frozenset(loss.name for loss in TABLE if loss.classification)

#: NumPy's ``softplus`` and ``relu`` for the formulas.
NUMPY_OPS = SimpleNamespace(softplus=lambda z: np.logaddexp(0.0, z), relu=lambda z: np.maximum(z, 0.0))

#: Input layouts: one ``X (n, d)`` shared by every task, or one ``X (T, n, d)`` per task.
SHARED, PER_TASK = "shared", "per-task"
LAYOUTS = (SHARED, PER_TASK)

#: Array dtypes the kernels are compiled for.
DTYPES = ("float32", "float64")


def loss(name: str) -> Loss:
    """The table's row of the loss called ``name``; raises for an unknown name."""
    if not isinstance(name, str):
        raise TypeError(f"loss must be a string, one of {LOSSES}; got {type(name).__name__}")
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"loss must be one of {LOSSES}; got {name!r}") from None


def loss_id(name: str) -> int:
    """Kernel code of the loss called ``name`` (its row's ``code``); raises for an unknown name."""
    return loss(name).code


def by_code(code: int) -> Loss:
    """The table's row whose kernel code is ``code``; raises ``ValueError`` for any other code."""
    if code not in _BY_CODE:
        raise ValueError(f"no loss has id {code}: the ids are the codes in losses.TABLE")
    return _BY_CODE[code]


def value(name: str, f: ArrayLike, y: ArrayLike) -> np.ndarray:
    """Per-example loss ``loss(f, y)``, elementwise."""
    return np.asarray(loss(name).formula(NUMPY_OPS, np.asarray(f), np.asarray(y)))


def slope(name: str, f: ArrayLike, y: ArrayLike) -> np.ndarray:
    """Derivative of the loss with respect to ``f``, elementwise."""
    return np.asarray(loss(name).slope(np.asarray(f), np.asarray(y)))
