"""Numba kernels, private: jit machinery (``_jit``: compile options, lazy compilation, the
:class:`~._jit.Pass` every parallel kernel runs through), vectorised math (``_math``), the losses as
scalar kernels (``_losses``), the fused passes of a step (``_passes``), each with its cost, the
counter-based random numbers (``_random``) and the paper's sampler (``_sampler``: inputs and labels
in one exact pass)."""

from ._losses import CORRELATION, UPSTREAM, loss_cost
from ._passes import (
    bias_relu,
    chunk_count,
    loss_slopes,
    masked_task_sum,
    per_task_backward_block,
    per_task_forward_block,
    relu_mask_colsum,
)
from ._sampler import RELU_MEAN, derive_task_keys, draw_per_task, draw_shared


def compiled_before():
    """Whether the kernels have compiled into Numba's disk cache before (a step's main pass is there)."""
    return per_task_backward_block.serial_kernel.on_disk()


__all__ = [
    "CORRELATION",
    "RELU_MEAN",
    "derive_task_keys",
    "draw_per_task",
    "draw_shared",
    "compiled_before",
    "UPSTREAM",
    "bias_relu",
    "chunk_count",
    "loss_cost",
    "loss_slopes",
    "masked_task_sum",
    "per_task_backward_block",
    "per_task_forward_block",
    "relu_mask_colsum",
]
