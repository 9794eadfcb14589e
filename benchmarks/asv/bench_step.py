"""asv: one multi-task step as d, width m and task count T grow, in both layouts; the small step's
fixed cost; forward and a training round; the NumPy reference as the floor every version is held to.

Each sweep changes one size of a base shape (pruning the full product keeps ``asv run`` within
minutes on 2 cores). ``setup`` builds seeded inputs and calls every timed function once, so that
compilation and first-touch page faults stay out of the timings. Only the public API is used
(``common``), so that the suite runs on every release since 0.1.0.
"""

from .common import LAYOUTS, PER_TASK, ROUND, SHARED, flops, inputs, medians, products, public

#: The base shapes ``(n, d, m, T)`` that the sweeps change one size of.
BASE = {SHARED: (1024, 256, 256, 64), PER_TASK: (128, 256, 128, 32)}
AXES = "ndmT"


def sweep(layout, axis, value):
    """The base shape of ``layout`` with one size changed. Along ``T`` the per-task input grows
    with ``T``, so there ``T n`` is kept and the sweep fits in memory."""
    shape = dict(zip(AXES, BASE[layout]))
    if axis == "T" and layout == PER_TASK:
        shape["n"] = max(1, shape["n"] * shape["T"] // value)
    shape[axis] = value
    return tuple(shape[a] for a in AXES)


def _step(args, **options):
    loss_and_grad = public("loss_and_grad")
    return lambda: loss_and_grad(*args, check_finite=False, **options)


class _Sweep:
    """A step's time, throughput and time over its own matrix products; subclasses sweep a size."""

    param_names = ["layout", "size"]
    axis = ""
    timeout = 120

    def setup(self, layout, size):
        self.shape = sweep(layout, self.axis, size)
        args = inputs(layout, *self.shape)
        self.step, self.gemm = _step(args), products(*args)
        self.step()
        self.gemm()

    def time_loss_and_grad(self, layout, size):
        self.step()

    def track_gflops(self, layout, size):
        return flops(layout, *self.shape) / medians({"step": self.step})["step"] / 1e9

    track_gflops.unit = "GFLOP/s"

    def track_roofline(self, layout, size):
        """Step time over the time of its own matrix products, measured alongside."""
        times = medians({"step": self.step, "gemm": self.gemm})
        return times["step"] / times["gemm"]

    track_roofline.unit = "step / GEMMs"


class SweepD(_Sweep):
    params = (list(LAYOUTS), [64, 1024, 4096])
    axis = "d"


class SweepWidth(_Sweep):
    params = (list(LAYOUTS), [64, 1024])
    axis = "m"


class SweepTasks(_Sweep):
    params = (list(LAYOUTS), [1, 64, 1024])
    axis = "T"


class SmallStep:
    """The small shared steps where a step's fixed cost (checks, Python between its calls) weighs
    most, with the default checks: time, and time over the step's products alone."""

    params = [["256,64,64,8", "512,96,128,24", "512,128,128,16"]]
    param_names = ["n,d,m,T"]

    def setup(self, shape):
        args = inputs(SHARED, *map(int, shape.split(",")))
        loss_and_grad = public("loss_and_grad")
        self.step, self.gemm = (lambda: loss_and_grad(*args)), products(*args)
        self.step()
        self.gemm()

    def time_checked_step(self, shape):
        self.step()

    def track_over_products(self, shape):
        times = medians({"step": self.step, "gemm": self.gemm}, rounds=15)
        return times["step"] / times["gemm"]

    track_over_products.unit = "step / GEMMs"


class Base:
    """Forward pass and one alternating training round at the base shapes, float32 and float64."""

    params = (list(LAYOUTS), ["float32", "float64"])
    param_names = ["layout", "dtype"]

    def setup(self, layout, dtype):
        self.X, self.Y, self.W, self.b, self.A = inputs(layout, *BASE[layout], dtype=dtype)
        self.forward = public("forward")
        self.forward(self.X, self.W, self.b, self.A, check_finite=False)

    def time_forward(self, layout, dtype):
        self.forward(self.X, self.W, self.b, self.A, check_finite=False)


class Round:
    """The paper's training round (``common.ROUND``): heads first, then the shared layer."""

    params = Base.params
    param_names = Base.param_names

    def setup(self, layout, dtype):
        self.X, self.Y, self.W, self.b, self.A = inputs(layout, *BASE[layout], dtype=dtype)
        self.round = public("alternating_round")  # 0.2.0 on
        self.time_train_step(layout, dtype)

    def time_train_step(self, layout, dtype):
        W, b, A = self.W.copy(), self.b.copy(), self.A.copy()
        self.round((self.X, self.Y), (self.X, self.Y), W, b, A, loss="logistic", **ROUND)


class Reference:
    """Our step over the plain NumPy reference's at the base shapes (higher is better): the
    reference is the same code in every version, so the ratio shows the kernels' own history."""

    params = [list(LAYOUTS)]
    param_names = ["layout"]
    timeout = 180

    def setup(self, layout):
        args = inputs(layout, *BASE[layout])
        reference = public("reference").loss_and_grad
        self.ours, self.reference = _step(args), (lambda: reference(*args))
        self.ours()
        self.reference()

    def track_speedup_over_reference(self, layout):
        times = medians({"ours": self.ours, "reference": self.reference}, rounds=5)
        return times["reference"] / times["ours"]

    track_speedup_over_reference.unit = "x"


class PerTaskMemory:
    """Peak memory of a process that holds the per-task inputs and takes steps on them."""

    params = [16, 64, 256]
    param_names = ["T"]

    def setup(self, T):
        self.step = _step(inputs(PER_TASK, 256, 512, 256, T))
        self.step()

    def peakmem_per_task_step(self, T):
        self.step()


class TaskScaling:
    """How the shared step's time grows with T against how its FLOPs grow: the target is a ratio
    of at most 1.1 from T = 1 to T = 1024 at (n, d, m) = (2048, 1024, 512)."""

    timeout = 300

    def setup(self):
        self.steps = {T: _step(inputs(SHARED, 2048, 1024, 512, T)) for T in (1, 1024)}
        for step in self.steps.values():
            step()

    def track_time_growth_over_flop_growth(self):
        times = medians(self.steps, rounds=9)
        growth = flops(SHARED, 2048, 1024, 512, 1024) / flops(SHARED, 2048, 1024, 512, 1)
        return (times[1024] / times[1]) / growth

    track_time_growth_over_flop_growth.unit = "ratio"
