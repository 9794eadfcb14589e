"""CI gate: is the working tree slower than a git ref, beyond the noise?

    python benchmarks/perf_gate.py --base HEAD~1

The working tree is compared with each ``--base`` ref and with the fixed baseline recorded in
``benchmarks/baseline.json`` (the last release), so that a slowdown spread over several commits
fails too. A ref missing from a shallow clone is fetched (``git fetch --unshallow``); one that
cannot be found fails the gate, never passes it.

The ref's ``mtrl_fast`` package is exported (``git archive``) into a temporary folder; one worker
process imports it, another the working tree's, each from its own folder. Both build the same
seeded inputs for a fixed set of points (both layouts, small and large, float32 and float64, the
default ``check_finite=True``, a head step and ``forward``) and warm up; then rounds alternate
between them, point by point, each timing a burst of back-to-back calls of the public API after
a pause that lets the other side's thread pools fall asleep. The rounds are spread over several
pairs of processes. A point fails when the working tree's median is more than ``--threshold``
slower than the ref's *and* a one-sided Mann-Whitney U test on the two sets of round samples
gives p < ``--alpha``: a noisy spell that hits one round does not fail the gate, a real
regression does. Exit status 1 when a point fails or a ref cannot be found, 0 otherwise.
"""

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import mannwhitneyu

# The workers get the environment this process started with: importing mtrl_fast (for its points and
# timing rules, below) sets thread-pool variables that an older release does not set for itself.
ENVIRONMENT = dict(os.environ)

from mtrl_fast.bench.timing import SETTLE_S, rotated  # noqa: E402
from mtrl_fast.bench.workload import GATE_POINTS as POINTS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

BASELINE = ROOT / "benchmarks" / "baseline.json"

BURST_S = 0.05

# The worker uses only what every compared version has (0.2.0 on): the public loss_and_grad with
# first_layer and check_finite, forward, and NumPy for inputs.
WORKER = r"""
import json, sys, time
import numpy as np
import mtrl_fast

def call(kind, dtype, layout, n, d, m, T):
    rng = np.random.default_rng([n, d, m, T])
    X = rng.standard_normal((n, d) if layout == "shared" else (T, n, d)).astype(dtype)
    Y = np.where(rng.random((T, n)) < 0.5, -1.0, 1.0).astype(dtype)
    W = (rng.standard_normal((m, d)) / np.sqrt(d)).astype(dtype)
    b = np.zeros(m, dtype=dtype)
    A = (rng.standard_normal((T, m)) / np.sqrt(m)).astype(dtype)
    if kind == "forward":
        return lambda: mtrl_fast.forward(X, W, b, A, check_finite=False)
    options = {"step": dict(check_finite=False), "checked": {},
               "heads": dict(check_finite=False, first_layer=False)}[kind]
    return lambda: mtrl_fast.loss_and_grad(X, Y, W, b, A, "logistic", **options)

points = [call(*p) for p in json.loads(sys.argv[1])]
calls = []
for run in points:
    run()  # compile, touch pages
    start = time.perf_counter()
    run()
    calls.append(max(1, int(float(sys.argv[2]) / max(time.perf_counter() - start, 1e-9))))
print(json.dumps({"package": mtrl_fast.__file__}), flush=True)
for line in sys.stdin:
    i = int(line)
    times = []
    for _ in range(calls[i]):
        start = time.perf_counter()
        points[i]()
        times.append(time.perf_counter() - start)
    print(float(np.median(times)), flush=True)
"""


class Worker:
    """A process running ``script`` (``WORKER`` by default) with the ``mtrl_fast`` found in ``tree``.

    The script prints one JSON line that names the package it imported (``hello``), then answers
    each line it reads with one line.
    """

    def __init__(self, tree, script=WORKER, args=None):
        env = dict(ENVIRONMENT, PYTHONPATH=str(tree))
        args = [json.dumps(POINTS), str(BURST_S)] if args is None else [str(arg) for arg in args]
        self.process = subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tempfile.gettempdir(),
        )
        hello = self.process.stdout.readline()
        if not hello:
            raise RuntimeError(f"the worker for {tree} failed to start (see its error above)")
        self.hello = json.loads(hello)
        if not self.hello["package"].startswith(str(tree)):
            raise RuntimeError(f"the worker for {tree} imported {self.hello['package']}")

    def ask(self, line):
        self.process.stdin.write(f"{line}\n")
        self.process.stdin.flush()
        return self.process.stdout.readline()

    def time(self, index):
        return float(self.ask(index))

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=60)


class BaseMissing(RuntimeError):
    """A ref to compare with is not in the repository and cannot be fetched."""


def _git(root, *args):
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)


def resolve(ref, root=ROOT):
    """The commit of ``ref``, fetching the history a shallow clone lacks (``--unshallow``).

    Raises :class:`BaseMissing` when it cannot be had: the gate then fails rather than compare
    with nothing.
    """

    def commit():
        found = _git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        return found.stdout.strip() if found.returncode == 0 else None

    def shallow():
        return _git(root, "rev-parse", "--is-shallow-repository").stdout.strip() == "true"

    if commit() is None and shallow():
        fetched = _git(root, "fetch", "--quiet", "--unshallow")
        if commit() is None:
            why = fetched.stderr.strip() or ("no remote to fetch from" if shallow() else "not in the history")
            raise BaseMissing(f"{ref} is not in this shallow clone, and fetching its history did not bring it: {why}")
    found = commit()
    if found is None:
        raise BaseMissing(f"{ref} is not a commit of this repository")
    return found


def baseline():
    """``(name, commit)`` of the fixed baseline recorded in ``benchmarks/baseline.json``."""
    recorded = json.loads(BASELINE.read_text())
    return recorded["name"], recorded["commit"]


def export(ref, folder):
    """The ref's ``mtrl_fast`` package, from ``git archive``, under ``folder``."""
    archive = folder / "base.tar"
    subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", "-o", str(archive), ref, "mtrl_fast"], check=True
    )
    with tarfile.open(archive) as tar:
        tar.extractall(folder / "base", filter="data")
    return folder / "base"


def verdict(base, new, threshold, alpha):
    """``(ratio of medians new / base, one-sided p that new is slower, failed)``."""
    ratio = float(np.median(new) / np.median(base))
    p = float(mannwhitneyu(new, base, alternative="greater").pvalue)
    return ratio, p, ratio > 1 + threshold and p < alpha


def measure(base_tree, new_tree, rounds, pairs):
    """Samples per point, ``{"base": [[...], ...], "new": [[...], ...]}``, in alternating rounds.

    The rounds are shared among ``pairs`` successive pairs of worker processes: one process can be
    a few percent faster or slower than another running the same code (where its arrays and
    buffers landed in memory), which several processes per side average out.
    """
    samples = {side: [[] for _ in POINTS] for side in ("base", "new")}
    for pair in range(pairs):
        workers = {"base": Worker(base_tree), "new": Worker(new_tree)}
        try:
            for round_index in range(pair * rounds // pairs, (pair + 1) * rounds // pairs):
                for i in range(len(POINTS)):
                    for side in rotated(("base", "new"), round_index):
                        time.sleep(SETTLE_S)
                        samples[side][i].append(workers[side].time(i))
        finally:
            for worker in workers.values():
                worker.close()
    return samples


def compare(label, ref, args):
    """Time the working tree against ``ref`` and print one line per point; whether one failed."""
    with tempfile.TemporaryDirectory() as folder:
        base_tree = export(ref, Path(folder))
        print(
            f"perf gate: working tree against {label}, {args.rounds} alternating rounds in {args.pairs} pairs "
            f"of processes, fails beyond +{args.threshold:.0%} at p < {args.alpha}",
            flush=True,
        )
        samples = measure(base_tree, ROOT, args.rounds, args.pairs)
    failed = False
    for i, (kind, dtype, layout, *sizes) in enumerate(POINTS):
        base, new = samples["base"][i], samples["new"][i]
        ratio, p, slower = verdict(base, new, args.threshold, args.alpha)
        failed |= slower
        print(
            f"  {kind:<7} {dtype:<7} {layout:<8} (n, d, m, T) = {tuple(sizes)!s:<22} base {np.median(base) * 1e3:8.2f} ms  "
            f"working tree {np.median(new) * 1e3:8.2f} ms  ratio {ratio:5.3f}  p {p:.3g}  "
            f"{'SLOWER' if slower else 'ok'}",
            flush=True,
        )
    return failed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--base", action="append", default=[], help="git ref to compare the working tree with, e.g. HEAD~1 (repeatable)"
    )
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the fixed baseline of benchmarks/baseline.json"
    )
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=4, help="successive pairs of worker processes sharing the rounds")
    parser.add_argument("--threshold", type=float, default=0.10, help="slowdown tolerated (default 0.10: 10%%)")
    parser.add_argument("--alpha", type=float, default=0.01, help="significance level of the one-sided test")
    args = parser.parse_args(argv)
    refs = [(ref, ref) for ref in args.base]
    if not args.no_baseline:
        name, commit = baseline()
        refs.append((f"the {name} baseline ({commit[:10]})", commit))
    if not refs:
        parser.error("nothing to compare with: give --base or drop --no-baseline")
    try:
        commits = [(label, resolve(ref)) for label, ref in refs]
    except BaseMissing as error:
        print(f"perf gate: FAILED, no base to compare with: {error}", file=sys.stderr)
        return 1
    failed = [label for label, commit in commits if compare(label, commit, args)]
    if failed:
        print(f"perf gate: SLOWER than {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
