"""Every implementation computes the same objective and gradients as the reference; a peer is one
file, found wherever it lives, and runs through every benchmark."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import mtrl_fast
from helpers import assert_close, assert_grads_close, make_problem
from mtrl_fast import reference
from mtrl_fast.bench import peers

INSTALLED = [name for name in peers.names() if peers.get(name).available()[0]]
# A peer that compiles (torch.compile: 20 s for a process's first shape, seconds for each next
# one) is checked on one loss, with the bias, in the slow step.
CASES = [
    pytest.param(name, loss, bias, marks=[] if peers.get(name).default else [pytest.mark.slow])
    for name in INSTALLED
    for loss in mtrl_fast.LOSSES
    for bias in (True, False)
    if peers.get(name).default or (loss == "logistic" and bias)
]


@pytest.mark.parametrize("name, loss, bias", CASES)
def test_backend_agrees_with_reference(name, layout, dtype, loss, bias):
    problem = make_problem(
        layout, dtype, n=23, d=7, m=9, T=5, bias=bias, labels="real" if loss == "squared" else "sign"
    )
    step = peers.get(name).prepare(*problem, loss)
    step.run()
    value, grads = step.result()
    ref_value, ref_grads = reference.loss_and_grad(*problem, loss)
    assert value == pytest.approx(ref_value, rel=1e-5 if dtype == np.float32 else 1e-12)
    assert_grads_close(mtrl_fast.Gradients(*grads), ref_grads, problem, loss, dtype)


@pytest.mark.parametrize(
    "name, bias",
    [pytest.param(case.values[0], case.values[2], marks=case.marks) for case in CASES if case.values[1] == "logistic"],
)
def test_backend_round_agrees_with_the_reference_round(name, layout, dtype, bias):
    """A training round (head steps on A, then W and b with weight decay) in every backend."""
    problem = make_problem(layout, dtype, n=23, d=7, m=9, T=5, bias=bias)
    step = peers.get(name).prepare_round(*problem, "logistic")
    step.run()
    step.run()  # each run starts from the same parameters
    value, params = step.result()
    ref_value, ref_params = peers.round_step(reference.loss_and_grad, *problem, "logistic").run()
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert value == pytest.approx(ref_value, rel=rtol)
    for got, want in zip(params, ref_params):
        assert (got is None) == (want is None)
        if want is not None:
            np.testing.assert_allclose(np.asarray(got), want, rtol=rtol, atol=rtol * float(np.abs(want).max()))
    assert np.array_equal(problem[2], make_problem(layout, dtype, n=23, d=7, m=9, T=5, bias=bias)[2])  # W untouched


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=[] if peers.get(name).default else [pytest.mark.slow])
        for name in INSTALLED
        if peers.get(name).training_step is not None
    ],
)
def test_training_steps_take_the_same_sgd_step(name):
    torch = pytest.importorskip("torch")
    X, Y = torch.randn(30, 6, dtype=torch.float64), torch.sign(torch.randn(4, 30, dtype=torch.float64))
    start = [torch.randn(5, 6, dtype=torch.float64), torch.randn(5, dtype=torch.float64), torch.zeros(4, 5).double()]
    params = [p.clone().requires_grad_(True) for p in start]
    peers.get(name).training_step(X, Y, params, "logistic")()
    value, grads = reference.loss_and_grad(*(p.numpy() for p in (X, Y, *start)), "logistic")
    for got, was, grad in zip(params, start, grads):
        np.testing.assert_allclose(got.detach().numpy(), was.numpy() - 0.01 * grad, rtol=1e-6, atol=1e-9)


def test_the_registry_knows_each_role_and_refuses_an_unknown_name():
    assert peers.names("ours") == ("mtrl_fast",) and peers.names("reference") == ("reference",)
    assert {"numpy", "torch", "jax", "torch.compile"} <= set(peers.names("peer"))
    assert set(peers.names("op")) == {"torch+ours", "jax+ours", "torch.compile+ours"}
    assert "torch.compile" not in peers.defaults() and peers.defaults()[0] == "mtrl_fast"
    with pytest.raises(ValueError, match="backend must be one of"):
        peers.get("tensorflow")


@pytest.mark.parametrize("name, module", [("torch", "torch"), ("jax", "jax"), ("torch.compile", "torch")])
def test_missing_peer_says_how_to_install(name, module, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    ok, why = peers.get(name).available()
    assert not ok
    assert "not installed" in why and "mtrl_fast[peers]" in why


def test_numpy_peer_is_independent_of_the_kernels():
    """The NumPy peer checks the large shapes the reference is too slow for: it must not call ours."""
    import inspect

    from mtrl_fast.bench.peers import numpy as numpy_peer

    source = inspect.getsource(numpy_peer)
    assert "kernels" not in source and "ops" not in source
    X, Y, W, b, A = make_problem("shared", np.float64, n=30, d=6, m=8, T=4)
    value, grads = numpy_peer.loss_and_grad(X, Y, W, b, A, "hinge")
    ref_value, ref_grads = reference.loss_and_grad(X, Y, W, b, A, "hinge")
    assert value == pytest.approx(ref_value)
    assert_close(grads.W, ref_grads.W, np.float64)


# A peer of one's own, in one file: the reference's step, and ours's cell on other seeds.
MY_PEER = """
from mtrl_fast import reference
from mtrl_fast.bench.peers import Peer, get

class Mine(Peer):
    name = "mine"

    def prepare(self, X, Y, W, b, A, loss):
        return get("reference").prepare(X, Y, W, b, A, loss)

    def prepare_round(self, X, Y, W, b, A, loss):
        return get("reference").prepare_round(X, Y, W, b, A, loss)

    def cell(self, spec, M, V, W0, seed, sampler="full"):
        return get("mtrl_fast").cell(spec, M, V, W0, seed + 1000, sampler)
"""


@pytest.fixture
def my_peer(tmp_path, monkeypatch):
    (tmp_path / "my_peer.py").write_text(textwrap.dedent(MY_PEER), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv(peers.VARIABLE, "my_peer")
    return "mine"


def test_a_peer_in_one_file_runs_through_the_bench_command_and_the_cell_benchmark(my_peer, tmp_path):
    from mtrl_fast.bench.cell import CellSpec, cell_peers, run_cell_benchmark

    assert my_peer in peers.names("peer") and my_peer in peers.defaults() and my_peer in cell_peers()
    out = tmp_path / "out"
    bench = subprocess.run(
        [
            sys.executable,
            "-m",
            "mtrl_fast",
            "bench",
            "--shapes",
            "shared:20,6,5,3",
            "--backends",
            f"mtrl_fast,{my_peer}",
        ]
        + ["--repeat", "2", "--threads", "1", "--no-progress", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bench.returncode == 0, bench.stderr
    rows = {row["backend"]: row for row in json.loads((out / "bench.json").read_text())["rows"]}
    assert rows[my_peer]["median_s"] > 0 and rows[my_peer]["note"] == ""
    assert rows["mtrl_fast"]["speedup_over_best_peer"] > 0  # counted as a peer
    results = run_cell_benchmark(CellSpec(d=40, T=12, width=16), ("mtrl_fast", my_peer), threads=1, repeat=2, log=str)
    assert len(results[my_peer]["seconds"]) == 2 and all(0 <= d <= 1 for d in results[my_peer]["distance"])


def test_a_peers_module_that_does_not_import_is_named(monkeypatch, capsys):
    from mtrl_fast import cli

    monkeypatch.setenv(peers.VARIABLE, "no_such_peer_module")
    with pytest.raises(ImportError, match="MTRL_FAST_PEERS names 'no_such_peer_module'"):
        peers.names()
    assert cli.main(["info"]) == 2
    assert "error: MTRL_FAST_PEERS names 'no_such_peer_module', which does not import" in capsys.readouterr().err
