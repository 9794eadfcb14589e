"""The JAX op's gradient step on XLA's FFI custom call and on the host callback, against the same step
called directly and against plain JAX (see ``mtrl_fast.bench.jax_op``).

    python benchmarks/jax_op.py [--rounds 15] [--threads 2]

Float32, logistic loss, one process, alternating bursts; medians in ms, and op / direct per path.
"""

import argparse


def main():
    import mtrl_fast
    from mtrl_fast._platform import blas_in_use, cpu_name
    from mtrl_fast.bench.jax_op import SHAPES, measure
    from mtrl_fast.jax import call_path

    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    mtrl_fast.set_num_threads(args.threads)
    print(f"# {cpu_name()}, NumPy's BLAS {blas_in_use()}, {args.threads} threads; the op's path: {call_path()}")
    print(
        "| shape (n, d, m, T) | op, FFI | op, callback | direct | plain JAX | no-op custom call | FFI / direct "
        "| callback / direct | plain / FFI |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for (layout, n, d, m, T), med in zip(SHAPES, measure(SHAPES, args.rounds)):
        ms = {name: 1e3 * seconds for name, seconds in med.items()}
        print(
            f"| {layout} ({n}, {d}, {m}, {T}) | {ms['ffi']:.3f} | {ms['callback']:.3f} | {ms['direct']:.3f} | "
            f"{ms['plain']:.3f} | {ms['ffi_noop']:.3f} | {ms['ffi'] / ms['direct']:.2f} | {ms['callback'] / ms['direct']:.2f} | "
            f"{ms['plain'] / ms['ffi']:.2f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
