"""A PyTorch training step through ``mtrl_fast.torch`` against the same step in plain autograd, as a
user's script runs it: one process per (import order, GEMM provider), with the user's environment.

With ``compiled``, two more contenders run: the same plain step with its loss compiled by
``torch.compile`` (the default inductor backend), as a speed-minded PyTorch user writes it, and our
op inside a compiled loss; their compilation is timed apart (``"compile_s"``, ``"compile_ours_s"``)
and kept out of their medians.

A provider's threads that spin after its products (OpenBLAS's for 0.1 s where NumPy was loaded
before mtrl_fast) would slow whatever the same process times next, and the wait policy a process
starts with depends on which of ``torch`` and ``mtrl_fast`` it imports first: so each pair is a
process of its own, started without the environment that importing mtrl_fast here set up. In a
process, plain and ours alternate in bursts of 3 steps (as a training loop calls them).
``benchmarks/torch_step.py`` prints the table; the asv suite tracks the ratio in both orders.
"""

import json
import os
import subprocess
import sys

from .. import _runtime

#: ``(layout, n, d, m, T)``: the shared and per-task target points, then a held-out pair.
SHAPES = [
    ("shared", 4096, 1024, 512, 256),
    ("shared", 2048, 512, 256, 128),
    ("per-task", 256, 512, 256, 64),
    ("per-task", 512, 256, 128, 32),
]
#: What a user's script imports first, by order.
ORDERS = {"mtrl_fast": "import mtrl_fast.torch, torch", "torch": "import torch, mtrl_fast.torch"}
#: The setting that leaves the ops their default (see ``mtrl_fast.gemms.torch_ops_gemm``).
DEFAULT = "default"
#: The peers whose training steps (``Peer.training_step``) are timed, by the label of their medians.
CONTENDERS = {
    "torch": "plain",
    "torch+ours": "ours",
    "torch.compile": "compiled",
    "torch.compile+ours": "compiled_ours",
}

WORKER = r"""
import json, statistics, sys, time, warnings
warnings.simplefilter("ignore")  # the import-order warning: this run measures that order
{imports}
import torch
import mtrl_fast
import mtrl_fast.torch as mt
from mtrl_fast import gemms
from mtrl_fast.bench import peers
from mtrl_fast.bench.torch_step import CONTENDERS

provider, threads, repeat, shapes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
names = [name for name, label in CONTENDERS.items() if not label.startswith("compiled") or sys.argv[5] == "1"]
torch.manual_seed(0)
torch.set_num_threads(threads)
mtrl_fast.set_num_threads(threads)
if provider != "default":
    mtrl_fast.set_gemm(provider)
print(json.dumps({{"gemm": gemms.torch_ops_gemm(), "resolved": gemms.resolve(gemms.torch_ops_gemm(), "float32")}}), flush=True)
for layout, n, d, m, T in shapes:
    X = torch.randn(n, d) if layout == "shared" else torch.randn(T, n, d)
    Y = torch.sign(torch.randn(T, n))
    start = list(mt.MultiTaskReLU(d=d, width=m, tasks=T).parameters())
    runs, first = {{}}, {{}}
    for name in names:
        params = [p.detach().clone().requires_grad_(True) for p in start]
        runs[CONTENDERS[name]] = peers.get(name).training_step(X, Y, params, "logistic")
        began = time.perf_counter()
        runs[CONTENDERS[name]]()  # the first call: torch.compile compiles the forward and the backward here
        first[CONTENDERS[name]] = time.perf_counter() - began
    times = {{label: [] for label in runs}}
    for function in runs.values():
        function()  # warm up
    for _ in range(repeat):
        for label, function in runs.items():
            for _ in range(3):
                began = time.perf_counter()
                function()
                times[label].append(time.perf_counter() - began)
    medians = {{label: statistics.median(values) * 1e3 for label, values in times.items()}}
    compile_s = {{"compile_s": first.get("compiled"), "compile_ours_s": first.get("compiled_ours")}}
    print(json.dumps({{**medians, **compile_s}}), flush=True)
"""


def user_environment():
    """This process's environment without what importing mtrl_fast set: the wait policy and
    OpenBLAS's thread timeout are the user's own (or unset), as in a fresh script."""
    env = dict(os.environ)
    for name, user_value in (
        ("OMP_WAIT_POLICY", _runtime.USER_WAIT_POLICY),
        ("OPENBLAS_THREAD_TIMEOUT", _runtime.USER_BLAS_TIMEOUT),
    ):
        env.pop(name, None)
        if user_value is not None:
            env[name] = user_value
    return env


def measure(order, provider=DEFAULT, shapes=SHAPES, repeat=9, threads=2, compiled=False):
    """Time the step in a process of its own: ``(setting, [{"plain": ms, "ours": ms}, ...])``, the
    ops' GEMM setting and what it resolved to, then one dict of medians per shape (with
    ``compiled``, also ``"compiled"``: the plain step under ``torch.compile``, ``"compiled_ours"``: our
    op inside a compiled loss, and ``"compile_s"`` and ``"compile_ours_s"``,
    the seconds its first call took)."""
    worker = subprocess.run(
        [
            sys.executable,
            "-c",
            WORKER.format(imports=ORDERS[order]),
            provider,
            str(threads),
            str(repeat),
            json.dumps(shapes),
            "1" if compiled else "0",
        ],
        capture_output=True,
        text=True,
        env=user_environment(),
        check=False,
    )
    if worker.returncode != 0:
        raise RuntimeError(f"the torch step's worker failed: {worker.stderr.strip().splitlines()[-1:]}")
    lines = worker.stdout.splitlines()
    return json.loads(lines[0]), [json.loads(line) for line in lines[1:]]
