"""What PyTorch's thread pool and ours do to each other in a training loop (docs/performance.md).

Each configuration runs in a fresh process: the import order decides which OpenMP wait policy
libgomp (one library, shared by PyTorch and Numba) reads when it loads. In each process the loop
is ``zero_grad; mtrl_fast.torch.loss(...).backward(); SGD step``, timed in alternating rounds
against the bare NumPy call ``mtrl_fast.loss_and_grad`` on the same arrays; the process's CPU time
over its wall time during the loop shows spinning (2 on 2 cores when idle workers spin).

    python benchmarks/torch_threads.py            # the target shapes, both import orders
"""

import json
import os
import subprocess
import sys
import textwrap

CONFIGURATIONS = {
    "mtrl_fast first (documented)": {"order": "mtrl_fast", "env": {}},
    "torch first": {"order": "torch", "env": {}},
    "torch first, OMP_WAIT_POLICY=PASSIVE": {"order": "torch", "env": {"OMP_WAIT_POLICY": "PASSIVE"}},
}

_CHILD = """
    import json, os, sys, time
    if {order!r} == "torch":
        import torch, mtrl_fast
    else:
        import mtrl_fast, torch
    import numpy as np
    import mtrl_fast.torch as mt
    from threadpoolctl import threadpool_info
    from mtrl_fast.bench.timing import alternating_medians
    from mtrl_fast.bench.workload import TARGET_POINTS
    POINTS = [TARGET_POINTS[i] for i in {points!r}]

    rows = []
    for point in POINTS:
        X, Y, W, b, A = point.inputs()
        Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
        params = [torch.tensor(a, requires_grad=True) for a in (W, b, A)]
        opt = torch.optim.SGD(params, lr=1e-4)

        def training_step():
            opt.zero_grad()
            mt.loss(Xt, Yt, *params, check_finite=False).backward()
            opt.step()

        def bare_step():
            mtrl_fast.loss_and_grad(X, Y, W, b, A, check_finite=False)

        cpu, wall = time.process_time(), time.perf_counter()
        medians = alternating_medians({{"torch": training_step, "bare": bare_step}}, rounds=9, settle_s=0.15)
        rows.append({{"point": point.label, "torch_ms": medians["torch"] * 1e3, "bare_ms": medians["bare"] * 1e3,
                      "cpu_over_wall": (time.process_time() - cpu) / (time.perf_counter() - wall)}})
    blas = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    print(json.dumps({{"torch_threads": torch.get_num_threads(), "our_threads": mtrl_fast.get_num_threads(),
                      "blas_threads": blas, "os_threads": len(os.listdir("/proc/self/task")), "rows": rows}}))
"""


def measure(order, env, points=(0, 1, 3)):
    child_env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    child_env.update(env)
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", textwrap.dedent(_CHILD.format(order=order, points=points))],
        capture_output=True,
        text=True,
        env=child_env,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    for name, configuration in CONFIGURATIONS.items():
        found = measure(configuration["order"], configuration["env"])
        print(
            f"{name}: threads torch {found['torch_threads']}, ours {found['our_threads']}, "
            f"BLAS {found['blas_threads']}, {found['os_threads']} OS threads in the process"
        )
        for row in found["rows"]:
            print(
                f"  {row['point']:<44} torch+ours SGD step {row['torch_ms']:8.2f} ms, bare NumPy call "
                f"{row['bare_ms']:8.2f} ms, ratio {row['torch_ms'] / row['bare_ms']:.2f}, "
                f"CPU/wall {row['cpu_over_wall']:.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
