"""``torch.compile`` (the default inductor backend) of the plain PyTorch objective: the peer a
speed-minded PyTorch user picks. Its first call compiles; ``mtrl-fast bench`` and the torch-step
benchmark report that call apart (``first_call_s``, ``compile_s``) and keep it out of the medians."""

from .torch import TorchCode


class TorchCompile(TorchCode):
    """The plain PyTorch objective (:class:`~mtrl_fast.bench.peers.torch.TorchCode`'s) under ``torch.compile``."""

    name = "torch.compile"
    default = False  # minutes of compilation over a grid of shapes: run when asked for

    def objective(self, X, Y, loss):
        import torch

        # Each shape compiles afresh, as a script with one shape does: without the reset, a second
        # shape would recompile for dynamic shapes, which a user with one shape never meets.
        torch._dynamo.reset()
        return torch.compile(super().objective(X, Y, loss))
