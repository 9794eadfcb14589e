"""The result type of ``loss_and_grad``, shared by the kernels' API and the reference."""

from typing import Any, NamedTuple

import numpy as np


class _Fields(NamedTuple):
    W: np.ndarray | None
    b: np.ndarray | None
    A: np.ndarray


class Gradients(_Fields):
    """Gradients of the objective with respect to each parameter, in the input dtype.

    A ``Gradients`` unpacks as ``W, b, A``; ``gram`` is an attribute beside the three fields,
    so that code unpacking the tuple works whether or not the Gram matrix was asked for.

    Attributes
    ----------
    W : ndarray, shape (m, d), or None
        Gradient with respect to the shared first layer; ``None`` from a head step
        (``first_layer=False``).
    b : ndarray, shape (m,), or None
        Gradient with respect to the bias; ``None`` when the bias is ``None``, or from a head step.
    A : ndarray, shape (T, m)
        Gradient with respect to the task heads.
    gram : ndarray, shape (m, m), or None
        ``D^T D``, returned in float64 (each block's product in the inputs' dtype), where ``D`` stacks every example's gradient with respect to its
        pre-activations (so that ``W = D^T X``), when asked for with ``gram=True``; else ``None``.
        Given ``D``, ``D^T x_perp`` for Gaussian inputs ``x_perp`` has covariance ``gram``: the
        exact reduced sampler of ``mtrl_fast.paper`` draws the part of ``W`` that lies outside
        the subspace it samples from it.
    """

    gram: np.ndarray | None = None

    def __new__(
        cls, W: np.ndarray | None, b: np.ndarray | None, A: np.ndarray, gram: np.ndarray | None = None
    ) -> "Gradients":
        self = super().__new__(cls, W, b, A)
        if gram is not None:
            self.gram = gram
        return self

    def __getnewargs__(self) -> tuple[Any, ...]:  # pickling keeps the Gram matrix
        return (self.W, self.b, self.A, self.gram)
