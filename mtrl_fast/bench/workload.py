"""What is benchmarked, in one place: the shapes, their inputs, FLOP counts and the step's products.

The ``mtrl-fast bench`` command, the asv suite, the pytest-benchmark comparisons and the CI checks
all take their shapes from here.
"""

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from ..losses import PER_TASK, SHARED


def step_inputs(layout, n, d, m, T, dtype="float32", seed=0):
    """Inputs of one ``loss_and_grad`` step with real values from a fixed seed.

    Returns ``(X, Y, W, b, A)``: Gaussian inputs, weights scaled to unit-variance
    pre-activations and outputs, labels -1/+1.
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d) if layout == SHARED else (T, n, d), dtype=np.float64).astype(dtype)
    W = (rng.standard_normal((m, d)) / np.sqrt(d)).astype(dtype)
    b = (0.1 * rng.standard_normal(m)).astype(dtype)
    A = (rng.standard_normal((T, m)) / np.sqrt(m)).astype(dtype)
    Y = np.where(rng.random((T, n)) < 0.5, -1, 1).astype(dtype)
    return X, Y, W, b, A


#: The benchmarked training round, the paper's workload: head steps on ``A`` (the first layer
#: frozen), then one step of ``W`` and ``b`` with weight decay, on the step's inputs.
ROUND = {"head_steps": 1, "head_lr": 0.1, "lr": 0.1, "weight_decay": 0.01}


@dataclass(frozen=True)
class Point:
    """One benchmark shape."""

    layout: str
    n: int
    d: int
    m: int
    T: int
    dtype: str = "float32"

    @property
    def flops(self) -> int:
        """Floating-point operations of one step: shared ``4 n d m + 6 n m T``, per-task ``4 T n d m + 5 T n m``
        (the forward and backward products with ``W``, and the work per output and hidden unit)."""
        if self.layout == SHARED:
            return 4 * self.n * self.d * self.m + 6 * self.n * self.m * self.T
        return 4 * self.T * self.n * self.d * self.m + 5 * self.T * self.n * self.m

    @property
    def head_step_flops(self) -> int:
        """Floating-point operations of a head step (``first_layer=False``): no back-propagation."""
        if self.layout == SHARED:
            return 2 * self.n * self.d * self.m + 4 * self.n * self.m * self.T
        return 2 * self.T * self.n * self.d * self.m + 3 * self.T * self.n * self.m

    def workload_flops(self, workload: str) -> int:
        """FLOPs of one ``"step"`` or one training ``"round"`` (see :data:`ROUND`)."""
        if workload == "round":
            return self.flops + int(ROUND["head_steps"]) * self.head_step_flops
        return self.flops

    @property
    def label(self) -> str:
        shape = "n={n} d={d} m={m} T={T}".format(**asdict(self))
        return f"{self.layout} {shape} {self.dtype}"

    def replace(self, **changes) -> "Point":
        return Point(**dict(asdict(self), **changes))

    def inputs(self):
        return step_inputs(self.layout, self.n, self.d, self.m, self.T, self.dtype)

    def input_bytes(self) -> int:
        """Bytes of inputs, parameters and their gradients: what a step cannot do without."""
        size = np.dtype(self.dtype).itemsize
        X = self.n * self.d * (1 if self.layout == SHARED else self.T)
        return size * (X + self.T * self.n + 2 * (self.m * self.d + self.m + self.T * self.m))


#: The speed targets' shapes.
TARGET_POINTS = (
    Point(SHARED, 1024, 256, 256, 64),
    Point(SHARED, 4096, 1024, 512, 256),
    Point(SHARED, 2048, 4096, 1024, 1024),
    Point(PER_TASK, 256, 512, 256, 64),
)

#: The perf gate's points (``benchmarks/perf_gate.py``): ``(call, dtype, layout, n, d, m, T)`` with
#: ``step`` ``loss_and_grad(check_finite=False)``, ``checked`` with the default checks, ``heads`` a head
#: step (``first_layer=False``) and ``forward``. Plain tuples: they travel as JSON to workers that
#: import older releases.
GATE_POINTS = (
    ("step", "float32", SHARED, 1024, 256, 256, 64),
    ("step", "float32", SHARED, 4096, 1024, 512, 256),
    ("step", "float32", PER_TASK, 128, 256, 256, 32),
    ("step", "float32", PER_TASK, 256, 512, 256, 64),
    ("checked", "float64", SHARED, 2048, 512, 256, 64),
    ("checked", "float64", PER_TASK, 128, 256, 256, 32),
    ("heads", "float32", PER_TASK, 256, 512, 256, 64),
    ("forward", "float32", SHARED, 4096, 1024, 512, 256),
)

#: Base shapes of the sweeps: ``quick`` (small: see docs/benchmarks.md for its time) and ``full``; the asv
#: suite sweeps around the quick bases.
BASES = {
    "quick": {SHARED: Point(SHARED, 1024, 256, 256, 64), PER_TASK: Point(PER_TASK, 128, 256, 128, 32)},
    "full": {SHARED: Point(SHARED, 2048, 1024, 512, 256), PER_TASK: Point(PER_TASK, 256, 512, 256, 64)},
}
SWEEPS = {
    "quick": {"d": (64, 256, 1024), "m": (64, 256, 1024), "T": (1, 64, 256)},
    "full": {"d": (64, 256, 1024, 4096), "m": (64, 256, 1024), "T": (1, 16, 64, 256, 1024)},
}

#: A few shapes for the pytest-benchmark comparisons.
PEER_POINTS = (
    Point(SHARED, 1024, 256, 256, 64),
    Point(SHARED, 2048, 1024, 512, 256),
    Point(PER_TASK, 128, 256, 256, 32),
)


def sweep_point(base, axis, value):
    """``base`` with one size changed. Along ``T`` the per-task input grows with ``T``, so there
    ``T n`` is kept fixed and the sweep fits in memory."""
    if axis == "T" and base.layout == PER_TASK:
        return base.replace(T=value, n=max(1, base.n * base.T // value))
    return base.replace(**{axis: value})


def make_grid(layouts=(SHARED, PER_TASK), ds=None, ms=None, Ts=None, dtypes=("float32",), quick=False):
    """Benchmark points: a base shape per layout and sweeps of ``d``, ``m`` and ``T`` around it."""
    size = "quick" if quick else "full"
    values = {"d": ds or SWEEPS[size]["d"], "m": ms or SWEEPS[size]["m"], "T": Ts or SWEEPS[size]["T"]}
    points = []
    for layout in layouts:
        base = BASES[size][layout]
        for dtype in dtypes:
            sweep = [base] + [sweep_point(base, axis, v) for axis in ("d", "m", "T") for v in values[axis]]
            for p in sweep:
                p = p.replace(dtype=dtype)
                if p not in points:
                    points.append(p)
    return points


def step_products(args, loss="logistic", gemm=None) -> tuple[Callable[[], None], list]:
    """The matrix products one ``loss_and_grad`` step runs, as a callable that reruns them on
    ``gemm`` (a provider of ``mtrl_fast.gemms``; by default the one the step runs on).

    The list is recorded from a real step (``mtrl_fast.ops.record_products``), so it is what the
    step runs at these shapes, thin-task fusion and per-task blocks included. Outputs go to
    preallocated arrays, one per distinct shape as the step's own block buffer, so the time is the
    products' alone (no allocation or first-touch page faults).

    Returns
    -------
    run : callable
        Runs every product once.
    shapes : list of ((int, int), (int, int))
        The operands' shapes, in order.
    """
    from .. import gemms, loss_and_grad
    from ..ops import record_products

    X, Y, W, b, A = args
    multiply = gemms.matmul(gemm or gemms.resolve(gemms.get_gemm(), X.dtype))
    with record_products() as recorded:
        loss_and_grad(X, Y, W, b, A, loss, check_finite=False)
    outputs: dict[tuple[int, int], np.ndarray] = {}
    products = []
    for left, right in recorded:
        shape = (left.shape[0], right.shape[1])
        out = outputs.setdefault(shape, np.ones(shape, dtype=left.dtype))
        products.append((left, right, out))

    def run():
        for left, right, out in products:
            multiply(left, right, out=out)

    return run, [(left.shape, right.shape) for left, right, _ in products]
