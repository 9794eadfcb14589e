"""The ``mtrl-fast`` command."""
import argparse
import sys


def _cmd_step(args):
    import mtrl_fast
    from mtrl_fast import reference
    from mtrl_fast.bench import step_inputs, time_call

    X, Y, W, b, A = step_inputs(args.layout, args.n, args.d, args.m, args.T, args.dtype)
    print(f"one loss_and_grad step, {args.layout} layout, (n, d, m, T) = ({args.n}, {args.d}, {args.m}, {args.T}), "
          f"{args.dtype}, {mtrl_fast.get_num_threads()} threads, median of {args.repeat}")
    ours = time_call(mtrl_fast.loss_and_grad, (X, Y, W, b, A, args.loss), args.repeat)
    print(f"  mtrl_fast  {ours[0] * 1e3:10.2f} ms  (min {ours[1] * 1e3:.2f}, max {ours[2] * 1e3:.2f})")
    if args.reference:
        ref = time_call(reference.loss_and_grad, (X, Y, W, b, A, args.loss), args.reference_repeat)
        print(f"  reference  {ref[0] * 1e3:10.2f} ms  (min {ref[1] * 1e3:.2f}, max {ref[2] * 1e3:.2f})")
        print(f"  speedup    {ref[0] / ours[0]:10.1f}x")
    return 0


def _cmd_info(args):
    import mtrl_fast

    mtrl_fast.show_config()
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="mtrl-fast", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser("info", help="versions, threading layer, BLAS: paste into a bug report")
    info.set_defaults(run=_cmd_info)

    step = commands.add_parser("step", help="time one loss_and_grad step, optionally against the NumPy reference")
    step.add_argument("--layout", choices=["shared", "per-task"], default="shared")
    for name, default in (("n", 1024), ("d", 256), ("m", 256), ("T", 64)):
        step.add_argument(f"--{name}", type=int, default=default)
    step.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    step.add_argument("--loss", default="logistic")
    step.add_argument("--repeat", type=int, default=7)
    step.add_argument("--reference", action="store_true", help="also time mtrl_fast.reference")
    step.add_argument("--reference-repeat", type=int, default=3)
    step.set_defaults(run=_cmd_step)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
