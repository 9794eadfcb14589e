"""``torch.compile`` (the default inductor backend): of the plain PyTorch objective (``torch.compile``),
the peer a speed-minded PyTorch user picks, and of the same code calling our op
(``torch.compile+ours``: a compiled model with ``mtrl_fast.torch.loss`` inside, which inductor keeps
as one opaque call). The first call compiles; ``mtrl-fast bench`` and the torch-step benchmark
report that call apart (``first_call_s``, ``compile_s``) and keep it out of the medians."""

from .torch import TorchCode, TorchOurs


def _compiled(objective):
    import torch

    # Each shape compiles afresh, as a script with one shape does: without the reset, a second
    # shape would recompile for dynamic shapes, which a user with one shape never meets.
    torch._dynamo.reset()
    return torch.compile(objective)


class TorchCompile(TorchCode):
    """The plain PyTorch objective (:class:`~mtrl_fast.bench.peers.torch.TorchCode`'s) under ``torch.compile``."""

    name = "torch.compile"
    default = False  # minutes of compilation over a grid of shapes: run when asked for

    def objective(self, X, Y, loss):
        return _compiled(super().objective(X, Y, loss))


class TorchCompileOurs(TorchOurs):
    """Our op inside a compiled function: what a user who compiles a model around it gets."""

    name = "torch.compile+ours"
    default = False

    def objective(self, X, Y, loss, check_finite=False):
        return _compiled(super().objective(X, Y, loss, check_finite=check_finite))
