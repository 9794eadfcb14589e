"""What the annotations tell a user's type checker: mypy checks this file in CI (it is not a test
that pytest runs). Each ``assert_type`` fails the check when an annotation says something else."""

from typing import Any

import numpy as np
from typing_extensions import assert_type

import mtrl_fast
from mtrl_fast import Gradients, reference

X = np.ones((8, 3), np.float32)
Y = np.ones((2, 8), np.float32)
W = np.ones((4, 3), np.float32)
A = np.ones((2, 4), np.float32)

value, grads = mtrl_fast.loss_and_grad(X, Y, W, None, A)
assert_type(value, float)
assert_type(grads, Gradients)
assert_type(grads.W, np.ndarray | None)
assert_type(grads.A, np.ndarray)
assert_type(mtrl_fast.forward(X, W, None, A), np.ndarray)
assert_type(mtrl_fast.backward(X, W, None, A, Y), Gradients)
assert_type(reference.loss_and_grad(X, Y, W, None, A), tuple[float, Gradients])
assert_type(mtrl_fast.alternating_round((X, Y), (X, Y), W, None, A), float)
assert_type(mtrl_fast.get_num_threads(), int)
assert_type(mtrl_fast.num_threads(1).__enter__(), int)
assert_type(mtrl_fast.get_gemm(), str)
assert_type(mtrl_fast.gemms.available(), list[str])
assert_type(mtrl_fast.gemms.auto_timings(measure=False), dict[str, Any] | None)
