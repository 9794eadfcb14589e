"""Numba kernels, private: jit machinery (``_jit``), vectorised math (``_math``), the losses as
scalar kernels (``_losses``), the fused passes of a step (``_passes``), each with its cost, and the
counter-based random numbers the samplers draw with (``_random``)."""

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


def compiled_before():
    """Whether the kernels have compiled into Numba's disk cache before (a step's main pass is there)."""
    return per_task_backward_block.kernel.on_disk()


__all__ = [
    "CORRELATION",
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
