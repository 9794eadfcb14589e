"""A PyTorch training step (zero_grad, loss, backward, SGD) through mtrl_fast.torch against the same
step in plain PyTorch autograd, in both import orders and on each GEMM provider: the ops' default
(what a user gets), then each installed provider chosen explicitly.

    python benchmarks/torch_step.py [--repeat 9] [--threads 2] [--order both|mtrl_fast|torch]

Each (import order, provider) runs in a process of its own, as a user's script would (see
``mtrl_fast.bench.torch_step``); the table gives the medians and plain / ours.
"""

import argparse


def main():
    from mtrl_fast import gemms
    from mtrl_fast._platform import blas_in_use, cpu_name
    from mtrl_fast.bench.torch_step import DEFAULT, ORDERS, SHAPES, measure

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--order", choices=("both", *ORDERS), default="both")
    args = parser.parse_args()
    print(f"# {cpu_name()}, NumPy's BLAS {blas_in_use()}, {args.threads} threads; ms, medians; plain / ours")
    for order in list(ORDERS) if args.order == "both" else [args.order]:
        for provider in (DEFAULT, *gemms.available()):
            setting, medians = measure(order, provider, SHAPES, args.repeat, args.threads)
            label = f"{order} first, {provider}"
            if provider == DEFAULT:
                label += f" ({setting['gemm']}: {setting['resolved']})"
            cells = [
                f"{layout} {(n, d, m, T)}: {med['plain']:.2f} / {med['ours']:.2f} = {med['plain'] / med['ours']:.2f}x"
                for (layout, n, d, m, T), med in zip(SHAPES, medians)
            ]
            print(f"{label}\n  " + "\n  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
