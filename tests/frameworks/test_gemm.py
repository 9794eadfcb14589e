"""Where the products run: NumPy's BLAS or PyTorch's matmul, chosen per process, per block, and by
mtrl_fast.torch's ops; the same answers, bitwise repeatable for one provider."""

import numpy as np
import pytest

import mtrl_fast
from helpers import assert_grads_close, make_problem
from mtrl_fast import ops, reference

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("layout", ["shared", "per-task"])
def test_the_torch_gemm_gives_the_reference_and_repeats_bitwise(layout, dtype):
    problem = make_problem(layout, dtype, n=70, d=9, m=12, T=6)
    with mtrl_fast.gemm("torch"), ops.record_products() as products:
        value, grads = mtrl_fast.loss_and_grad(*problem, "logistic", gram=True)
        again = mtrl_fast.loss_and_grad(*problem, "logistic", gram=True)
        F = mtrl_fast.forward(*problem[:1], *problem[2:])
    assert products and mtrl_fast.get_gemm() == "numpy"
    want_value, want = reference.loss_and_grad(*problem, "logistic")
    np.testing.assert_allclose(value, want_value, rtol=1e-5)
    assert_grads_close(grads, want, problem, "logistic", dtype)
    np.testing.assert_allclose(F, reference.forward(*problem[:1], *problem[2:]), rtol=1e-5, atol=1e-5)
    assert value == again[0]
    for got, repeated in zip((*grads, grads.gram), (*again[1], again[1].gram)):
        assert (got is None and repeated is None) or np.array_equal(got, repeated)


def test_read_only_inputs_run_on_the_torch_gemm_without_a_warning(recwarn):
    X, Y, W, b, A = make_problem("shared", np.float32, n=20, d=5, m=4, T=3)
    for array in (X, W, A):
        array.flags.writeable = False
    with mtrl_fast.gemm("torch"):
        mtrl_fast.loss_and_grad(X, Y, W, b, A)
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


def test_the_torch_ops_run_on_torch_unless_a_block_asks_otherwise(monkeypatch):
    import mtrl_fast.torch as mt

    seen = []
    real = ops._product
    monkeypatch.setattr(ops, "_product", lambda *args, **kw: seen.append(ops.get_gemm()) or real(*args, **kw))
    X, Y, W, b, A = (torch.from_numpy(a) for a in make_problem("shared", np.float32, n=20, d=5, m=4, T=3))
    W.requires_grad_(True)
    mt.loss(X, Y, W, b, A, "logistic").backward()
    assert seen and set(seen) == {"torch"}
    seen.clear()
    with mtrl_fast.gemm("numpy"):
        mt.loss(X, Y, W, b, A, "logistic").backward()
    assert seen and set(seen) == {"numpy"}


def test_set_gemm_and_bad_names(monkeypatch):
    monkeypatch.setattr(ops, "_default_gemm", "numpy")
    mtrl_fast.set_gemm("torch")
    assert mtrl_fast.get_gemm() == "torch"
    with mtrl_fast.gemm("numpy"):
        assert mtrl_fast.get_gemm() == "numpy"
    assert mtrl_fast.get_gemm() == "torch"
    with pytest.raises(ValueError, match="gemm must be one of"):
        mtrl_fast.set_gemm("mkl")
    with pytest.raises(ValueError, match="gemm must be one of"), mtrl_fast.gemm("blis"):
        pass


def test_the_environment_chooses_the_gemm_at_import():
    from helpers import run_python

    chosen = run_python("import mtrl_fast; print(mtrl_fast.get_gemm())", MTRL_FAST_GEMM="torch")
    assert chosen.returncode == 0 and chosen.stdout.strip() == "torch", chosen.stderr
    bad = run_python("import mtrl_fast", MTRL_FAST_GEMM="mkl")
    assert bad.returncode != 0 and "MTRL_FAST_GEMM: gemm must be one of ('numpy', 'torch')" in bad.stderr
