"""asv: one multi-task step as d, width m and task count T grow, in both layouts.

Each class sweeps one size around a base shape (pruning the full product keeps ``asv run``
within minutes on 2 cores). ``setup`` builds seeded inputs and calls every timed function once,
so that compilation and first-touch page faults stay out of the timings.
"""
import time

import numpy as np

import mtrl_fast
from mtrl_fast.bench import Point, own_products
from mtrl_fast.train import PretrainConfig, alternating_round

BASE = {"shared": dict(n=1024, d=256, m=256, T=64), "per-task": dict(n=128, d=256, m=256, T=32)}


class _Step:
    """A step's time, throughput and time over its own matrix products; subclasses sweep a size."""

    param_names = ["layout", "size"]
    timeout = 120

    def point(self, layout, size):
        raise NotImplementedError

    def setup(self, layout, size):
        self.p = self.point(layout, size)
        self.X, self.Y, self.W, self.b, self.A = self.p.inputs()
        self.gemm = own_products(self.p, (self.X, self.Y, self.W, self.b, self.A))
        self.step()
        self.gemm()

    def step(self):
        mtrl_fast.loss_and_grad(self.X, self.Y, self.W, self.b, self.A, check_finite=False)

    def time_loss_and_grad(self, layout, size):
        self.step()

    def _medians(self, rounds=7):
        step, gemm = [], []
        for _ in range(rounds):  # alternate, so a slow spell of the machine hits both
            start = time.perf_counter()
            self.step()
            step.append(time.perf_counter() - start)
            start = time.perf_counter()
            self.gemm()
            gemm.append(time.perf_counter() - start)
        return float(np.median(step)), float(np.median(gemm))

    def track_gflops(self, layout, size):
        return self.p.flops / self._medians()[0] / 1e9

    track_gflops.unit = "GFLOP/s"

    def track_roofline(self, layout, size):
        """Step time over the time of its own matrix products, measured alongside."""
        step, gemm = self._medians()
        return step / gemm

    track_roofline.unit = "step / GEMMs"


class SweepD(_Step):
    params = (["shared", "per-task"], [64, 1024, 4096])

    def point(self, layout, d):
        return Point(layout, **dict(BASE[layout], d=d))


class SweepWidth(_Step):
    params = (["shared", "per-task"], [64, 1024])

    def point(self, layout, m):
        return Point(layout, **dict(BASE[layout], m=m))


class SweepTasks(_Step):
    params = (["shared", "per-task"], [1, 64, 1024])

    def point(self, layout, T):
        base = BASE[layout]
        n = base["n"] if layout == "shared" else max(1, base["n"] * base["T"] // T)  # per-task: T n fixed
        return Point(layout, **dict(base, n=n, T=T))


class Base:
    """Forward pass and one alternating training round at the base shapes, float32 and float64."""

    params = (["shared", "per-task"], ["float32", "float64"])
    param_names = ["layout", "dtype"]

    def setup(self, layout, dtype):
        self.X, self.Y, self.W, self.b, self.A = Point(layout, **BASE[layout], dtype=dtype).inputs()
        self.config = PretrainConfig(width=self.W.shape[0], dtype=dtype, loss="logistic")
        self.time_forward(layout, dtype)
        self.time_train_step(layout, dtype)

    def time_forward(self, layout, dtype):
        mtrl_fast.forward(self.X, self.W, self.b, self.A, check_finite=False)

    def time_train_step(self, layout, dtype):
        """Heads first, then the shared layer: two steps and the updates."""
        W, b, A = self.W.copy(), self.b.copy(), self.A.copy()
        alternating_round((self.X, self.Y), (self.X, self.Y), W, b, A, self.config)


class PerTaskMemory:
    """Peak memory of a process that holds the per-task inputs and takes steps on them."""

    params = [16, 64, 256]
    param_names = ["T"]

    def setup(self, T):
        self.args = Point("per-task", 256, 512, 256, T).inputs()
        mtrl_fast.loss_and_grad(*self.args, check_finite=False)

    def peakmem_per_task_step(self, T):
        mtrl_fast.loss_and_grad(*self.args, check_finite=False)
