"""asv: the JAX op's gradient step over the same step called directly, on each call path (XLA's FFI
custom call and the host callback; ``mtrl_fast.bench.jax_op``). Lower is better; 1.0 is no overhead."""

from mtrl_fast.bench.jax_op import PATHS, SHAPES

# The tiny shape, where the call's fixed cost shows, and a mid-size one; by the label asv shows.
POINTS = {f"{layout} {n},{d},{m},{T}": (layout, n, d, m, T) for layout, n, d, m, T in (SHAPES[0], SHAPES[1])}


class JaxOp:
    params = [list(PATHS), list(POINTS)]
    param_names = ["path", "shape"]
    timeout = 300

    def setup(self, path, shape):
        import importlib.util

        if importlib.util.find_spec("jax") is None:
            raise NotImplementedError("needs JAX (pip install 'mtrl_fast[jax]')")

    def track_op_over_direct(self, path, shape):
        from mtrl_fast.bench.jax_op import measure

        point = POINTS[shape]
        (medians,) = measure([point], rounds=7)
        return medians[path] / medians["direct"]

    track_op_over_direct.unit = "x"
