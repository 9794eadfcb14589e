"""asv: one multi-task step as d, width m and task count T grow, in both layouts.

Each class sweeps one size around the quick base shapes of ``mtrl_fast.bench.workload`` (pruning
the full product keeps ``asv run`` within minutes on 2 cores). ``setup`` builds seeded inputs and
calls every timed function once, so that compilation and first-touch page faults stay out of the
timings.
"""

import mtrl_fast
from mtrl_fast.bench.backends import FRAMEWORKS, OURS
from mtrl_fast.bench.timing import alternating_medians
from mtrl_fast.bench.workload import BASES, ROUND, Point, step_products, sweep_point
from mtrl_fast.losses import LAYOUTS, PER_TASK

BASE = BASES["quick"]


class _Step:
    """A step's time, throughput and time over its own matrix products; subclasses sweep a size."""

    param_names = ["layout", "size"]
    axis = None
    timeout = 120

    def setup(self, layout, size):
        self.p = sweep_point(BASE[layout], self.axis, size)
        self.X, self.Y, self.W, self.b, self.A = self.p.inputs()
        self.gemm = step_products((self.X, self.Y, self.W, self.b, self.A))[0]
        self.step()
        self.gemm()

    def step(self):
        mtrl_fast.loss_and_grad(self.X, self.Y, self.W, self.b, self.A, check_finite=False)

    def time_loss_and_grad(self, layout, size):
        self.step()

    def _medians(self):
        return alternating_medians({"step": self.step, "gemm": self.gemm}, rounds=7)

    def track_gflops(self, layout, size):
        return self.p.flops / self._medians()["step"] / 1e9

    track_gflops.unit = "GFLOP/s"

    def track_roofline(self, layout, size):
        """Step time over the time of its own matrix products, measured alongside."""
        medians = self._medians()
        return medians["step"] / medians["gemm"]

    track_roofline.unit = "step / GEMMs"


class SweepD(_Step):
    params = (list(LAYOUTS), [64, 1024, 4096])
    axis = "d"


class SweepWidth(_Step):
    params = (list(LAYOUTS), [64, 1024])
    axis = "m"


class SweepTasks(_Step):
    params = (list(LAYOUTS), [1, 64, 1024])
    axis = "T"


class Base:
    """Forward pass and one alternating training round at the base shapes, float32 and float64."""

    params = (list(LAYOUTS), ["float32", "float64"])
    param_names = ["layout", "dtype"]

    def setup(self, layout, dtype):
        self.X, self.Y, self.W, self.b, self.A = BASE[layout].replace(dtype=dtype).inputs()
        self.time_forward(layout, dtype)
        self.time_train_step(layout, dtype)

    def time_forward(self, layout, dtype):
        mtrl_fast.forward(self.X, self.W, self.b, self.A, check_finite=False)

    def time_train_step(self, layout, dtype):
        """Heads first, then the shared layer: two steps and the updates."""
        W, b, A = self.W.copy(), self.b.copy(), self.A.copy()
        mtrl_fast.alternating_round((self.X, self.Y), (self.X, self.Y), W, b, A, loss="logistic", **ROUND)


class PerTaskMemory:
    """Peak memory of a process that holds the per-task inputs and takes steps on them."""

    params = [16, 64, 256]
    param_names = ["T"]

    def setup(self, T):
        self.args = Point(PER_TASK, 256, 512, 256, T).inputs()
        mtrl_fast.loss_and_grad(*self.args, check_finite=False)

    def peakmem_per_task_step(self, T):
        mtrl_fast.loss_and_grad(*self.args, check_finite=False)


class TaskScaling:
    """How the shared step's time grows with T against how its FLOPs grow: the target is a ratio
    of at most 1.1 from T = 1 to T = 1024 at (n, d, m) = (2048, 1024, 512)."""

    timeout = 300

    def setup(self):
        self.points = {T: Point("shared", 2048, 1024, 512, T) for T in (1, 1024)}
        self.steps = {}
        for T, point in self.points.items():
            args = point.inputs()
            self.steps[T] = lambda args=args: mtrl_fast.loss_and_grad(*args, check_finite=False)
            self.steps[T]()

    def track_time_growth_over_flop_growth(self):
        medians = alternating_medians(self.steps, rounds=9)
        flops = {T: point.flops for T, point in self.points.items()}
        return (medians[1024] / medians[1]) / (flops[1024] / flops[1])

    track_time_growth_over_flop_growth.unit = "ratio"


class Round:
    """The paper's training round (``workload.ROUND``: a head step, then a first-layer step) at the
    quick base shapes, ours against the same round in PyTorch and JAX (each as its users write
    it), in float32. A peer that is not installed is skipped."""

    params = (list(LAYOUTS), [OURS, *FRAMEWORKS])
    param_names = ["layout", "backend"]
    timeout = 180

    def setup(self, layout, backend):
        from mtrl_fast.bench.backends import get

        peer = get(backend)
        if not peer.available()[0]:
            raise NotImplementedError(f"{backend} is not installed")  # asv skips the point
        self.round = peer.prepare_round(*BASE[layout].inputs(), "logistic")
        self.round.run()

    def time_round(self, layout, backend):
        self.round.run()
