"""Fast multi-task ReLU network kernels for multi-task representation learning.

A two-layer ReLU network with a first layer ``W (m, d)`` and bias ``b (m,)`` shared by ``T``
tasks, each with its own linear head ``A[t]``: ``forward`` computes every task's outputs and
``loss_and_grad`` the mean loss over tasks with its gradients, for one input matrix shared by all
tasks ``X (n, d)`` or one per task ``X (T, n, d)``. ``mtrl_fast.reference`` holds plain NumPy
versions of both.
"""
from . import _config  # noqa: F401  (first: sets the threading environment before kernels load)
from .gradients import Gradients
from .losses import LOSSES
from .ops import forward, loss_and_grad
from .threads import config_info, get_num_threads, num_threads, set_num_threads, show_config

__version__ = "0.1.0"

__all__ = [
    "LOSSES",
    "Gradients",
    "config_info",
    "forward",
    "get_num_threads",
    "loss_and_grad",
    "num_threads",
    "set_num_threads",
    "show_config",
]
