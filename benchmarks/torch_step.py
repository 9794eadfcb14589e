"""A PyTorch training step (zero_grad, loss, backward, SGD) through mtrl_fast.torch against the same
step in plain PyTorch autograd, in both import orders and on each GEMM provider: the ops' default
(what a user gets), then each installed provider chosen explicitly.

    python benchmarks/torch_step.py [--repeat 9] [--threads 2] [--order both|mtrl_fast|torch]

Each (import order, provider) runs in a process of its own, as a user's script would: a provider's
threads that spin after its products (OpenBLAS's for 0.1 s where NumPy was loaded before mtrl_fast)
would otherwise slow whatever the same process times next. In a process, plain and ours alternate in
bursts of 3 steps (as a training loop calls them); the table gives the medians and plain / ours.
"""

import argparse
import json
import os
import subprocess
import sys

SHAPES = [
    # (layout, n, d, m, T): the shared and per-task points, then a held-out pair
    ("shared", 4096, 1024, 512, 256),
    ("shared", 2048, 512, 256, 128),
    ("per-task", 256, 512, 256, 64),
    ("per-task", 512, 256, 128, 32),
]
ORDERS = {"mtrl_fast": "import mtrl_fast.torch, torch", "torch": "import torch, mtrl_fast.torch"}

WORKER = r"""
import json, statistics, sys, time, warnings
warnings.simplefilter("ignore")  # the import-order warning: this run measures that order
{imports}
import torch
import mtrl_fast
import mtrl_fast.torch as mt
from mtrl_fast import gemms

provider, threads, repeat, shapes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
torch.manual_seed(0)
torch.set_num_threads(threads)
mtrl_fast.set_num_threads(threads)
if provider != "default":
    mtrl_fast.set_gemm(provider)
print(json.dumps({{"gemm": gemms.torch_ops_gemm(), "resolved": gemms.resolve(gemms.torch_ops_gemm(), "float32")}}), flush=True)
for layout, n, d, m, T in shapes:
    X = torch.randn(n, d) if layout == "shared" else torch.randn(T, n, d)
    Y = torch.sign(torch.randn(T, n))
    model = mt.MultiTaskReLU(d=d, width=m, tasks=T)
    params = list(model.parameters())
    plain = [p.detach().clone().requires_grad_(True) for p in params]
    opt_ours, opt_plain = torch.optim.SGD(params, lr=0.01), torch.optim.SGD(plain, lr=0.01)

    def ours():
        opt_ours.zero_grad()
        model.loss(X, Y, "logistic").backward()
        opt_ours.step()

    def reference():
        W, b, A = plain
        opt_plain.zero_grad()
        mt.plain_losses("logistic", mt.plain_forward(X, W, b, A), Y).mean().backward()
        opt_plain.step()

    runs = {{"plain": reference, "ours": ours}}
    times = {{name: [] for name in runs}}
    for function in runs.values():
        function(), function()  # warm up
    for _ in range(repeat):
        for name, function in runs.items():
            for _ in range(3):
                start = time.perf_counter()
                function()
                times[name].append(time.perf_counter() - start)
    print(json.dumps({{name: statistics.median(values) * 1e3 for name, values in times.items()}}), flush=True)
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--order", choices=("both", *ORDERS), default="both")
    args = parser.parse_args()
    from mtrl_fast import _runtime, gemms
    from mtrl_fast._platform import blas_in_use, cpu_name

    # The workers get the user's environment, not the one importing mtrl_fast here set up: with
    # torch imported first, the wait policy a user's process starts with is what is measured.
    env = dict(os.environ)
    for name, user_value in (
        ("OMP_WAIT_POLICY", _runtime.USER_WAIT_POLICY),
        ("OPENBLAS_THREAD_TIMEOUT", _runtime.USER_BLAS_TIMEOUT),
    ):
        env.pop(name, None)
        if user_value is not None:
            env[name] = user_value

    print(f"# {cpu_name()}, NumPy's BLAS {blas_in_use()}, {args.threads} threads; ms, medians; plain / ours")
    orders = list(ORDERS) if args.order == "both" else [args.order]
    for order in orders:
        for provider in ("default", *gemms.available()):
            worker = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    WORKER.format(imports=ORDERS[order]),
                    provider,
                    str(args.threads),
                    str(args.repeat),
                    json.dumps(SHAPES),
                ],
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            hello = json.loads(worker.stdout.readline())
            label = f"{order} first, {provider}" + (
                f" ({hello['gemm']}: {hello['resolved']})" if provider == "default" else ""
            )
            cells = []
            for layout, n, d, m, T in SHAPES:
                med = json.loads(worker.stdout.readline())
                cells.append(
                    f"{layout} {(n, d, m, T)}: {med['plain']:.2f} / {med['ours']:.2f} = {med['plain'] / med['ours']:.2f}x"
                )
            worker.wait()
            print(f"{label}\n  " + "\n  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
