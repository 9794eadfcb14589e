"""A PyTorch training step (zero_grad, loss, backward, SGD) through mtrl_fast.torch against plain
PyTorch autograd, with our products on each installed GEMM provider (PyTorch's, the ops' default;
NumPy's; MKL's): medians of alternating runs in one process, the ratio plain / ours for each.

    python benchmarks/torch_step.py [--repeat 15] [--threads 2] [--import-torch-first]
"""

import argparse
import statistics
import time
from importlib import import_module

SHAPES = [
    # (layout, n, d, m, T): the shared and per-task points, then a held-out pair
    ("shared", 4096, 1024, 512, 256),
    ("shared", 2048, 512, 256, 128),
    ("per-task", 256, 512, 256, 64),
    ("per-task", 512, 256, 128, 32),
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--import-torch-first", action="store_true", help="import torch before mtrl_fast")
    args = parser.parse_args()
    # mtrl_fast first (as the README advises) unless asked otherwise: it sets the thread pools' policy.
    first, second = ("torch", "mtrl_fast.torch") if args.import_torch_first else ("mtrl_fast.torch", "torch")
    import_module(first)
    import_module(second)
    import torch

    import mtrl_fast
    import mtrl_fast.torch as mt
    from mtrl_fast import gemms

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    mtrl_fast.set_num_threads(args.threads)
    from mtrl_fast._info import blas_in_use, cpu_name

    print(f"# {cpu_name()}, torch {torch.__version__}, NumPy's BLAS {blas_in_use()}, {args.threads} threads")
    providers = gemms.available()
    print(
        f"{'shape':<34} {'plain ms':>9} "
        + " ".join(f"{'ours/' + name + ' ms':>14}" for name in providers)
        + " "
        + " ".join(f"{'x ' + name:>8}" for name in providers)
    )
    for shape in SHAPES:
        med = _medians(shape, args.repeat, mt, torch, providers)
        layout, *sizes = shape
        print(
            f"{layout + ' ' + str(tuple(sizes)):<34} {med['plain']:9.2f} "
            + " ".join(f"{med[name]:14.2f}" for name in providers)
            + " "
            + " ".join(f"{med['plain'] / med[name]:7.2f}x" for name in providers),
            flush=True,
        )


def _medians(shape, repeat, mt, torch, providers):
    """Median milliseconds of the plain step and of ours on each GEMM, timed alternately."""
    from mtrl_fast import gemms

    layout, n, d, m, T = shape
    X = torch.randn(n, d) if layout == "shared" else torch.randn(T, n, d)
    Y = torch.sign(torch.randn(T, n))
    model = mt.MultiTaskReLU(d=d, width=m, tasks=T)
    params = list(model.parameters())
    plain = [p.detach().clone().requires_grad_(True) for p in params]
    opt_ours = torch.optim.SGD(params, lr=0.01)
    opt_plain = torch.optim.SGD(plain, lr=0.01)

    def ours():
        opt_ours.zero_grad()
        model.loss(X, Y, "logistic").backward()
        opt_ours.step()

    def reference():
        W, b, A = plain
        opt_plain.zero_grad()
        mt._plain_losses("logistic", mt._plain_forward(X, W, b, A), Y).mean().backward()
        opt_plain.step()

    def on(provider):
        def run():
            with gemms.gemm(provider):
                ours()

        return run

    runs = {"plain": reference, **{name: on(name) for name in providers}}
    times = {name: [] for name in runs}
    for function in runs.values():
        function()  # warm up
    for _ in range(repeat):
        for name, function in runs.items():  # alternating: drift hits all alike
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1e3 for name, values in times.items()}


if __name__ == "__main__":
    main()
