"""asv: the JAX op's gradient step over the same step called directly, on each call path (XLA's FFI
custom call and the host callback), through the benchmark harness of the version measured
(``mtrl_fast.bench.jax_op``, 0.4.0 on); without it, or without JAX, the points skip. Lower is
better; 1.0 is no overhead."""

import importlib.util

from .common import public

#: A small shape, where the call's fixed cost shows, and a mid-size one, by the label asv shows.
POINTS = {
    "shared 512,128,128,16": ("shared", 512, 128, 128, 16),
    "shared 2048,512,256,128": ("shared", 2048, 512, 256, 128),
}


class JaxOp:
    params = [["ffi", "callback"], list(POINTS)]
    param_names = ["path", "shape"]
    timeout = 300

    def setup(self, path, shape):
        if importlib.util.find_spec("jax") is None:
            raise NotImplementedError("needs JAX (pip install 'mtrl_fast[jax]')")
        self.measure = public("jax_op", "mtrl_fast.bench").measure

    def track_op_over_direct(self, path, shape):
        (medians,) = self.measure([POINTS[shape]], rounds=7)
        return medians[path] / medians["direct"]

    track_op_over_direct.unit = "x"
