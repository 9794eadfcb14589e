"""asv: what a fresh install pays before its first result, tracked across commits.

``FirstCall`` runs the first ``loss_and_grad`` of a small float32 problem in a new process with an
empty Numba cache (a fresh machine, virtual environment or CI run), and tracks its seconds: the
import and the compilation of what that call runs. It uses the public API alone, which every
release has, so that asv can draw its history.
"""

import os
import subprocess
import sys
import tempfile
import time

FIRST_CALL = """
import numpy as np
import mtrl_fast

rng = np.random.default_rng(0)
T, n, d, m = 8, 64, 32, 16
X = rng.standard_normal((n, d) if "{layout}" == "shared" else (T, n, d)).astype(np.float32)
Y = np.where(rng.random((T, n)) < 0.5, -1.0, 1.0).astype(np.float32)
W = rng.standard_normal((m, d)).astype(np.float32)
A = rng.standard_normal((T, m)).astype(np.float32)
mtrl_fast.loss_and_grad(X, Y, W, None, A)
"""


class FirstCall:
    """Seconds from a new process's start to its first step's result, with nothing compiled yet."""

    param_names = ["layout"]
    params = [["shared", "per-task"]]
    timeout = 300
    repeat = 1
    number = 1

    def track_first_call_seconds(self, layout):
        with tempfile.TemporaryDirectory(prefix="asv-numba-") as cache:
            environment = {**os.environ, "NUMBA_CACHE_DIR": cache}
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-c", FIRST_CALL.format(layout=layout)], check=True, env=environment, cwd=cache
            )
            return time.perf_counter() - start

    track_first_call_seconds.unit = "seconds"
