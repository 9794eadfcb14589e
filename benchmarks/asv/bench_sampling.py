"""asv: the paper's main job beyond the step: drawing samples with their labels, and a whole cell.

``Sampling`` times the paper's sampler (``mtrl_fast.paper``, 0.2.0 on) on one group of tasks
(inputs and labels) beside NumPy's ``standard_normal`` alone, and tracks their ratio in the same
run. ``Cell`` times one recovery cell at a size a CI run affords, sampling included, in ours,
PyTorch and JAX, through the benchmark harness of the version measured (``mtrl_fast.bench.cell``,
0.3.0 on); a version or environment without it skips.
"""

import inspect

import numpy as np

from .common import medians, public


class Sampling:
    """Float32 normals per second with the labels, against NumPy's generator (one thread, no labels)."""

    param_names = ["d"]
    params = [[100, 400]]
    timeout = 120

    def setup(self, d):
        self.family = public("tasks", "mtrl_fast.paper").make_task_family(d, 5, 16, np.random.default_rng(0))
        self.n = 5 * d
        # Into arrays of its own where the version can (0.3.0 on), else into fresh ones.
        keeps = "out" in inspect.signature(self.family.sample_tasks).parameters
        self.out = {"out": (np.empty((16, self.n, d), np.float32), np.empty((16, self.n), np.float32))} if keeps else {}
        self.rng = np.random.default_rng(0)
        self.normals = np.empty(16 * self.n * d, np.float32)
        self.ours()
        self.numpy()

    def ours(self):
        self.family.sample_tasks(0, 16, self.n, (1, 2, 0, 0), "per-task", np.float32, **self.out)

    def numpy(self):
        self.rng.standard_normal(out=self.normals, dtype=np.float32)

    def time_sample_tasks(self, d):
        self.ours()

    def track_normals_per_second(self, d):
        return self.normals.size / medians({"ours": self.ours}, rounds=5)["ours"]

    track_normals_per_second.unit = "normals/s"

    def track_speedup_over_numpy(self, d):
        times = medians({"ours": self.ours, "numpy": self.numpy}, rounds=5)
        return times["numpy"] / times["ours"]

    track_speedup_over_numpy.unit = "x"


class Cell:
    """One recovery cell (one round, n = 5 d, width 256), sampling included: ours, and the same cell
    as PyTorch and JAX users write it (``mtrl_fast.bench.cell``; skipped where not installed)."""

    param_names = ["implementation", "d", "T"]
    params = [["mtrl_fast", "torch", "jax"], [100], [100, 400]]
    timeout = 300

    def setup(self, implementation, d, T):
        cell = public("cell", "mtrl_fast.bench")
        try:  # the peers' classes (0.5 on), else the backends and cell runners before them
            peer = public("peers", "mtrl_fast.bench").get(implementation)
            self.run = peer.cell
        except NotImplementedError:
            peer = public("backends", "mtrl_fast.bench").get(implementation)
            self.run = cell.RUNNERS[implementation]
        if not peer.available()[0]:
            raise NotImplementedError(f"{implementation} is not installed")
        self.spec = cell.CellSpec(d=d, T=T)
        self.problem = self.spec.problem()
        self.run(self.spec, *self.problem, 1)  # compile, trace, touch pages

    def time_cell(self, implementation, d, T):
        self.run(self.spec, *self.problem, 0)
