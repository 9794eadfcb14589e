"""A PyTorch training step (zero_grad, loss, backward, SGD) through mtrl_fast.torch against the same
step in plain PyTorch autograd, in both import orders and on each GEMM provider: the ops' default
(what a user gets), then each installed provider chosen explicitly.

    python benchmarks/torch_step.py [--repeat 9] [--threads 2] [--order both|mtrl_fast|torch] [--compiled]
                                    [--shapes layout,n,d,m,T ...] [--default-only]

Each (import order, provider) runs in a process of its own, as a user's script would (see
``mtrl_fast.bench.torch_step``); the table gives the medians and plain / ours. With ``--compiled``, the plain step compiled by
``torch.compile`` runs too (compiled / ours), and ours inside a compiled loss (compiled ours / ours); their
compilation is timed apart and left out.
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
    parser.add_argument("--compiled", action="store_true", help="also the plain step under torch.compile")
    parser.add_argument("--shapes", nargs="+", metavar="LAYOUT,N,D,M,T", help="instead of the default shapes")
    parser.add_argument("--default-only", action="store_true", help="only the ops' default GEMM")
    args = parser.parse_args()
    shapes = SHAPES
    if args.shapes:
        shapes = [(text.split(",")[0], *(int(v) for v in text.split(",")[1:])) for text in args.shapes]
    print(f"# {cpu_name()}, NumPy's BLAS {blas_in_use()}, {args.threads} threads; ms, medians; plain / ours")
    for order in list(ORDERS) if args.order == "both" else [args.order]:
        for provider in (DEFAULT,) if args.default_only else (DEFAULT, *gemms.available()):
            setting, medians = measure(order, provider, shapes, args.repeat, args.threads, args.compiled)
            label = f"{order} first, {provider}"
            if provider == DEFAULT:
                label += f" ({setting['gemm']}: {setting['resolved']})"
            cells = [
                f"{layout} {(n, d, m, T)}: {med['plain']:.2f} / {med['ours']:.2f} = {med['plain'] / med['ours']:.2f}x"
                + (
                    f"; compiled {med['compiled']:.2f} / {med['ours']:.2f} = {med['compiled'] / med['ours']:.2f}x"
                    f" (compiling {med['compile_s']:.1f} s); compiled ours {med['compiled_ours']:.2f} / {med['ours']:.2f}"
                    f" = {med['compiled_ours'] / med['ours']:.2f}x"
                    if "compiled" in med
                    else ""
                )
                for (layout, n, d, m, T), med in zip(shapes, medians)
            ]
            print(f"{label}\n  " + "\n  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
