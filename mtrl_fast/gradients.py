"""The result type of ``loss_and_grad``, shared by the kernels' API and the reference."""

from typing import NamedTuple

import numpy as np


class Gradients(NamedTuple):
    """Gradients of the objective with respect to each parameter, in the input dtype.

    Attributes
    ----------
    W : ndarray, shape (m, d), or None
        Gradient with respect to the shared first layer; ``None`` from a head step
        (``first_layer=False``).
    b : ndarray, shape (m,), or None
        Gradient with respect to the bias; ``None`` when the bias is ``None``, or from a head step.
    A : ndarray, shape (T, m)
        Gradient with respect to the task heads.
    """

    W: np.ndarray | None
    b: np.ndarray | None
    A: np.ndarray
