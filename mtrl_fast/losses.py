"""The four per-example losses in plain NumPy (the readable definitions), and the names of the
losses, layouts and dtypes that the API, the paper's code, the benchmarks and the CLI share.

Each loss is a function of the prediction ``f`` and the label ``y``; ``slope`` is its
derivative with respect to ``f``. The compiled kernels carry a scalar twin of these formulas
(``mtrl_fast._kernels._losses``), tested against this module.
"""

import numpy as np
from numpy.typing import ArrayLike

#: Loss names in kernel order: a loss's index here is the integer id the kernels receive.
LOSSES = ("squared", "logistic", "hinge", "correlation")

#: Input layouts: one ``X (n, d)`` shared by every task, or one ``X (T, n, d)`` per task.
SHARED, PER_TASK = "shared", "per-task"
LAYOUTS = (SHARED, PER_TASK)

#: Array dtypes the kernels are compiled for.
DTYPES = ("float32", "float64")

#: Losses whose labels must be -1 or +1.
CLASSIFICATION_LOSSES = frozenset({"logistic", "hinge", "correlation"})


def loss_id(name: str) -> int:
    """Kernel id of the loss called ``name``; raises for an unknown name."""
    if not isinstance(name, str):
        raise TypeError(f"loss must be a string, one of {LOSSES}; got {type(name).__name__}")
    try:
        return LOSSES.index(name)
    except ValueError:
        raise ValueError(f"loss must be one of {LOSSES}; got {name!r}") from None


def value(name: str, f: ArrayLike, y: ArrayLike) -> np.ndarray:
    """Per-example loss ``loss(f, y)``, elementwise."""
    f = np.asarray(f)
    y = np.asarray(y)
    if name == "squared":
        return 0.5 * (f - y) ** 2
    if name == "logistic":
        return np.logaddexp(0.0, -y * f)  # log(1 + exp(-y f)) without overflow
    if name == "hinge":
        return np.maximum(0.0, 1.0 - y * f)
    if name == "correlation":
        return -y * f
    loss_id(name)  # raises the error that names the valid losses
    raise AssertionError("unreachable")


def slope(name: str, f: ArrayLike, y: ArrayLike) -> np.ndarray:
    """Derivative of the loss with respect to ``f``, elementwise."""
    f = np.asarray(f)
    y = np.asarray(y)
    if name == "squared":
        return f - y
    if name == "logistic":
        # -y / (1 + exp(y f)) == -y * sigmoid(-y f); expit-style form avoids overflow.
        margin = y * f
        return -y * np.exp(-np.logaddexp(0.0, margin))
    if name == "hinge":
        return np.where(y * f < 1.0, -y, 0.0)
    if name == "correlation":
        return -y + 0.0 * f
    loss_id(name)
    raise AssertionError("unreachable")
