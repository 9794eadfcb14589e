"""mtrl_fast's kernels (``mtrl_fast``) and its NumPy reference (``reference``)."""

import mtrl_fast
from mtrl_fast import reference

from . import OURS, Peer, PreparedStep, round_step


class _NumPyAPI(Peer):
    """A ``loss_and_grad`` with mtrl_fast's NumPy API (values unchecked) from ``module``."""

    module = mtrl_fast

    def version(self):
        import numba

        return f"mtrl_fast {mtrl_fast.__version__} (Numba {numba.__version__})"

    def set_threads(self, k):
        mtrl_fast.set_num_threads(k)

    def prepare(self, X, Y, W, b, A, loss):
        last = {}

        def run():
            last["out"] = self.module.loss_and_grad(X, Y, W, b, A, loss, check_finite=False)
            return last["out"]

        return PreparedStep(run, lambda: last["out"] if "out" in last else run())

    def prepare_round(self, X, Y, W, b, A, loss):
        return round_step(self.module.loss_and_grad, X, Y, W, b, A, loss)


class Ours(_NumPyAPI):
    """Our kernels through the NumPy API: ``mtrl_fast.loss_and_grad``."""

    name = OURS
    role = "ours"

    def cell(self, spec, M, V, W0, seed, sampler="full"):
        """The paper's own pretraining (``mtrl_fast.paper.train.pretrain``) on ``sampler``."""
        import numpy as np

        from mtrl_fast.paper.tasks import TaskFamily
        from mtrl_fast.paper.train import pretrain

        return pretrain(TaskFamily(M=M, V=V), spec.config(sampler), np.random.default_rng(seed), W0=W0).W


class Reference(_NumPyAPI):
    """The plain NumPy reference (a loop over tasks), the ground truth of every check."""

    name = "reference"
    role = "reference"
    module = reference
