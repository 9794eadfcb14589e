"""asv: a PyTorch training step through ``mtrl_fast.torch`` against plain autograd, in both import
orders (each point a process of its own with the user's environment: ``mtrl_fast.bench.torch_step``).
The ops' default GEMM; the tracked values are plain autograd's time over ours, and the same plain
step under ``torch.compile`` (its compilation left out) over ours (higher is better)."""

from mtrl_fast.bench.torch_step import ORDERS, SHAPES

# A shared and a per-task point that run in seconds; by the label asv shows.
POINTS = {f"{layout} {n},{d},{m},{T}": (layout, n, d, m, T) for layout, n, d, m, T in (SHAPES[1], SHAPES[3])}


class TorchStep:
    params = [list(ORDERS), list(POINTS)]
    param_names = ["imported first", "shape"]
    timeout = 300

    def setup(self, order, shape):
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            raise NotImplementedError("needs PyTorch (pip install 'mtrl_fast[torch]')")

    def track_speedup_over_autograd(self, order, shape):
        from mtrl_fast.bench.torch_step import measure

        point = POINTS[shape]
        _, (medians,) = measure(order, shapes=[point], repeat=5)
        return medians["plain"] / medians["ours"]

    track_speedup_over_autograd.unit = "x"

    def track_speedup_over_compiled(self, order, shape):
        from mtrl_fast.bench.torch_step import measure

        point = POINTS[shape]
        _, (medians,) = measure(order, shapes=[point], repeat=5, compiled=True)
        return medians["compiled"] / medians["ours"]

    track_speedup_over_compiled.unit = "x"
