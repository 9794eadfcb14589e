"""asv: the paper's main job beyond the step: drawing samples with their labels, and a whole cell.

``Sampling`` times the compiled sampler on one group of tasks (inputs and labels in one pass)
beside NumPy's ``standard_normal`` alone, and tracks their ratio in the same run. ``Cell`` times
one recovery cell at a size a CI run affords, sampling included, in ours, PyTorch and JAX.
"""

import numpy as np

from mtrl_fast.bench.backends import get
from mtrl_fast.bench.cell import CELL_BACKENDS, RUNNERS, CellSpec
from mtrl_fast.bench.timing import alternating_medians
from mtrl_fast.paper.tasks import make_task_family


class Sampling:
    """Float32 normals per second with the labels, against NumPy's generator (one thread, no labels)."""

    param_names = ["d"]
    params = [[100, 400]]
    timeout = 120

    def setup(self, d):
        self.family = make_task_family(d, 5, 16, np.random.default_rng(0))
        self.n = 5 * d
        self.out = (np.empty((16, self.n, d), np.float32), np.empty((16, self.n), np.float32))
        self.rng = np.random.default_rng(0)
        self.normals = np.empty(16 * self.n * d, np.float32)
        self.ours()
        self.numpy()

    def ours(self):
        self.family.sample_tasks(0, 16, self.n, (1, 2, 0, 0), "per-task", np.float32, out=self.out)

    def numpy(self):
        self.rng.standard_normal(out=self.normals, dtype=np.float32)

    def time_sample_tasks(self, d):
        self.ours()

    def track_normals_per_second(self, d):
        return self.normals.size / alternating_medians({"ours": self.ours}, rounds=5)["ours"]

    track_normals_per_second.unit = "normals/s"

    def track_speedup_over_numpy(self, d):
        medians = alternating_medians({"ours": self.ours, "numpy": self.numpy}, rounds=5)
        return medians["numpy"] / medians["ours"]

    track_speedup_over_numpy.unit = "x"


class Cell:
    """One recovery cell (one round, n = 5 d, width 256), sampling included: ours, and the same cell
    as PyTorch and JAX users write it (``mtrl_fast.bench.cell``; skipped where not installed)."""

    param_names = ["implementation", "d", "T"]
    params = [list(CELL_BACKENDS), [100], [100, 400]]
    timeout = 300

    def setup(self, implementation, d, T):
        if not get(implementation).available()[0]:
            raise NotImplementedError(f"{implementation} is not installed")
        self.spec = CellSpec(d=d, T=T)
        self.problem = self.spec.problem()
        self.run = RUNNERS[implementation]
        self.run(self.spec, *self.problem, 1)  # compile, trace, touch pages

    def time_cell(self, implementation, d, T):
        self.run(self.spec, *self.problem, 0)
