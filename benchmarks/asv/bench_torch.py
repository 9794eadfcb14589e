"""asv: a PyTorch training step through ``mtrl_fast.torch`` against plain autograd, in both import
orders (each point a process of its own with the user's environment), through the benchmark harness
of the version measured (``mtrl_fast.bench.torch_step``, 0.4.0 on); without it, or without PyTorch,
the points skip. The ops' default GEMM; the tracked values are plain autograd's time over ours, and
the same plain step under ``torch.compile`` (its compilation left out) over ours (higher is better)."""

import importlib.util

from .common import public

#: A shared and a per-task point that run in seconds, by the label asv shows: ``(layout, n, d, m, T)``.
POINTS = {
    "shared 2048,512,256,128": ("shared", 2048, 512, 256, 128),
    "per-task 512,256,128,32": ("per-task", 512, 256, 128, 32),
}


class TorchStep:
    params = [["mtrl_fast", "torch"], list(POINTS)]
    param_names = ["imported first", "shape"]
    timeout = 300

    def setup(self, order, shape):
        if importlib.util.find_spec("torch") is None:
            raise NotImplementedError("needs PyTorch (pip install 'mtrl_fast[torch]')")
        self.measure = public("torch_step", "mtrl_fast.bench").measure

    def track_speedup_over_autograd(self, order, shape):
        _, (medians,) = self.measure(order, shapes=[POINTS[shape]], repeat=5)
        return medians["plain"] / medians["ours"]

    track_speedup_over_autograd.unit = "x"

    def track_speedup_over_compiled(self, order, shape):
        _, (medians,) = self.measure(order, shapes=[POINTS[shape]], repeat=5, compiled=True)
        return medians["compiled"] / medians["ours"]

    track_speedup_over_compiled.unit = "x"
