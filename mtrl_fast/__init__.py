"""Fast multi-task ReLU network kernels for multi-task representation learning.

A two-layer ReLU network with a first layer ``W (m, d)`` and bias ``b (m,)`` shared by ``T``
tasks, each with its own linear head ``A[t]``: ``forward`` computes every task's outputs and
``loss_and_grad`` the mean loss over tasks with its gradients, for one input matrix shared by all
tasks ``X (n, d)`` or one per task ``X (T, n, d)``; ``backward`` is the vector-Jacobian product of
``forward`` for any upstream gradient. ``mtrl_fast.reference`` holds plain NumPy versions of all
three; ``alternating_round`` is one round of the paper's alternating gradient descent;
``mtrl_fast.torch`` and ``mtrl_fast.jax`` wrap them as differentiable framework ops.

This package's top level is the kernel library alone (numpy, numba and threadpoolctl); the
paper's reproduction (``mtrl_fast.paper``) and the benchmark harness (``mtrl_fast.bench``) are
separate parts with extras of their own.
"""

from . import (
    _runtime,  # noqa: F401  (first: sets the threading environment before kernels load)
    reference,
)
from ._info import config_info, show_config
from ._runtime import get_num_threads, num_threads, set_num_threads
from ._scratch import release_scratch
from ._version import __version__ as __version__
from .gemms import gemm, get_gemm, set_gemm
from .gradients import Gradients
from .losses import DTYPES, LAYOUTS, LOSSES
from .ops import backward, forward, loss_and_grad
from .rounds import alternating_round

__all__ = [
    "DTYPES",
    "LAYOUTS",
    "LOSSES",
    "Gradients",
    "alternating_round",
    "backward",
    "config_info",
    "forward",
    "gemm",
    "get_gemm",
    "get_num_threads",
    "loss_and_grad",
    "num_threads",
    "reference",
    "release_scratch",
    "set_gemm",
    "set_num_threads",
    "show_config",
]
