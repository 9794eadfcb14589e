"""The kernels as differentiable JAX functions (``pip install "mtrl_fast[jax]"``).

``forward`` and ``loss`` are ``jax.custom_vjp`` functions around one call into the kernels: they work
under ``jit``, ``grad``, ``value_and_grad`` and ``vmap``, in float32, and in float64 when
``jax_enable_x64`` is on. Gradients flow to ``W``, ``b`` and ``A``; ``X`` (and ``Y``) are taken as
constants, as under ``jax.lax.stop_gradient``, so their cotangents are zero.

The call is an XLA custom call (``jax.ffi.ffi_call``) wherever XLA's foreign-function interface runs
at a version this package reads (``mtrl_fast._xla_ffi``): XLA hands the kernels its own buffers,
without a host callback's dispatch and copies. Elsewhere, or with the environment variable
``MTRL_FAST_JAX_CALLBACK=1``, it is ``jax.pure_callback`` (with one warning when the interface was
expected but refused). :func:`call_path` says which, as does ``mtrl-fast info``.

Shapes, dtypes and the loss name are checked when the function is traced, in the dtypes JAX
computes in (with ``jax_enable_x64`` off, float64 inputs compute in float32). Values (finiteness,
labels) are checked before the call wherever they are concrete: in an eager call, and for
arrays closed over under a transform. Tracers' values are not checked (under ``jit``, say), on
either path. ``vmap`` uses ``vmap_method="sequential"``: the batch runs as one call per element.

``loss`` runs the fused ``loss_and_grad`` once and keeps its gradients for the backward pass.
"""

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _settings, _xla_ffi, ops
from ._kernels import UPSTREAM
from ._validate import ArrayMeta, Problem, check_problem, check_shapes, require_finite, require_labels
from .gradients import Gradients
from .losses import loss_id

try:
    import jax
    import jax.numpy as jnp
    from jax.typing import ArrayLike
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError("mtrl_fast.jax needs JAX, which is not installed: pip install 'mtrl_fast[jax]'") from error

__all__ = ["call_path", "forward", "loss"]

_VMAP = "sequential"
#: The environment variable that, set to anything but "" or "0", keeps the ops on the host callback.
CALLBACK_VARIABLE = "MTRL_FAST_JAX_CALLBACK"


def _struct(shape: tuple[int, ...], dtype: Any) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, dtype)


def _meta(value: Any) -> ArrayMeta | None:
    """The array as JAX will compute with it: its shape and its canonical dtype (float64 becomes
    float32 when ``jax_enable_x64`` is off)."""
    if value is None:
        return None
    dtype = np.dtype(value.dtype)
    if dtype.kind == "f":
        dtype = np.dtype(jax.dtypes.canonicalize_dtype(dtype))
    return ArrayMeta(tuple(value.shape), len(value.shape), dtype)


def _x64() -> str:
    return "on" if jax.config.read("jax_enable_x64") else "off"


def _check(X: Any, W: Any, b: Any, A: Any, Y: Any = None, loss: str | None = None, check_finite: bool = True) -> None:
    """Shapes and dtypes (at trace time); then the values of the arrays that are concrete."""
    named = (("X", X), ("W", W), ("b", b), ("A", A), ("Y", Y))
    for name, value in named:
        if value is not None and not hasattr(value, "dtype"):
            raise TypeError(f"{name} must be an array; got {type(value).__name__}")
    metas = [_meta(value) for _, value in named]
    try:
        if Y is None:
            check_shapes(metas[0], metas[1], metas[2], metas[3], convert=False)
        else:
            check_shapes(metas[0], metas[1], metas[2], metas[3], metas[4], convert=False)
    except TypeError as error:
        passed = ", ".join(f"{name} {np.dtype(value.dtype)}" for name, value in named if value is not None)
        raise TypeError(
            f"{error} (you passed {passed}; jax_enable_x64 is {_x64()}, so JAX computes in "
            f"{'the dtypes given' if _x64() == 'on' else 'float32'})"
        ) from None
    concrete = {
        name: np.asarray(value) for name, value in named if value is not None and not isinstance(value, jax.core.Tracer)
    }
    if check_finite:
        require_finite(*concrete.items())
    if loss is not None and "Y" in concrete:
        require_labels(concrete["Y"], loss)


def _grad_structs(W: Any, b: Any, A: Any) -> tuple[Any, Any, Any]:
    return (_struct(W.shape, W.dtype), None if b is None else _struct(b.shape, b.dtype), _struct(A.shape, A.dtype))


class FFIFallbackWarning(RuntimeWarning):
    """XLA's foreign-function interface was expected but refused: the ops run on ``jax.pure_callback``."""


def _ffi_refusal() -> str:
    """Why the ops keep to the callback (``""``: they take the FFI custom call). Read when an op is
    traced: the environment variable each time, XLA's interface once per process."""
    forced = os.environ.get(CALLBACK_VARIABLE, "")
    if forced not in ("", "0"):
        return f"{CALLBACK_VARIABLE}={forced}"
    return _probe_refusal()


@_xla_ffi.once
def _probe_refusal() -> str:
    _, reason = _xla_ffi.probe()
    if reason:
        warnings.warn(
            f"mtrl_fast.jax runs its ops through jax.pure_callback, which costs more per call: {reason}",
            FFIFallbackWarning,
            stacklevel=5,
        )
    return reason


def call_path() -> str:
    """How the ops call the kernels: ``"ffi (XLA FFI API 0.3)"``, or ``"callback: <why>"``.

    The first call probes XLA's foreign-function interface (a tiny custom call under ``jit``).
    """
    refusal = _ffi_refusal()
    if refusal:
        return f"callback: {refusal}"
    version, _ = _xla_ffi.probe()
    assert version is not None
    return f"ffi (XLA FFI API {version[0]}.{version[1]})"


@dataclass(frozen=True)
class _Op:
    """What one call computes, and what it may be handed.

    ``problem(*operands)`` checks the operands (shapes, dtypes, no empty dimension) and returns the
    step's :class:`~mtrl_fast._validate.Problem`; ``results(p)`` gives the shape of each result the
    call writes (``None`` where the op has no such result, as the bias gradient without a bias);
    ``fill(p, results)`` writes every result into ``results``, arrays of those shapes in ``p``'s
    dtype. ``operand_names`` and ``result_names`` name the buffers in errors.
    """

    operand_names: tuple[str, ...]
    result_names: tuple[str, ...]
    problem: Callable[..., Problem]
    results: Callable[[Problem], list[tuple[int, ...] | None]]
    fill: Callable[[Problem, list[Any]], None]

    def checked(self, arrays: list[Any], buffers: list[Any]) -> tuple[Problem, list[Any]]:
        """The problem and the results, after checking every buffer XLA handed over against what
        the op computes for those operands: nothing is written before this returns."""
        p = self.problem(*arrays)
        expected = self.results(p)
        if len(buffers) != len(expected):
            raise ValueError(
                f"the op writes {len(expected)} results ({', '.join(self.result_names)}); got {len(buffers)}"
            )
        for name, buffer, shape in zip(self.result_names, buffers, expected):
            if (buffer is None) != (shape is None):
                raise ValueError(f"result {name} must be {'absent' if shape is None else 'present'}")
            if buffer is None:
                continue
            if buffer.shape != shape or buffer.dtype != p.X.dtype:
                raise ValueError(
                    f"result {name} must have shape {shape} and dtype {p.X.dtype}; XLA handed a buffer of "
                    f"shape {buffer.shape} and dtype {buffer.dtype}"
                )
        return p, buffers


def _run(op: _Op, settings: "_settings.Settings", arrays: list[Any], buffers: list[Any]) -> None:
    with settings.applied():
        p, results = op.checked(arrays, buffers)
        op.fill(p, results)


def _call(target: str, op: _Op, structs: Sequence[Any], operands: Sequence[Any]) -> tuple[Any, ...]:
    """``op`` as one call from JAX: an FFI custom call named after ``target`` (the results are
    XLA's own buffers), or the host callback (the results are fresh arrays, which JAX then copies).

    Either runs under the GEMM provider and thread count in force here, where the op is traced,
    on whichever thread XLA runs it (its own pool's, when the computation holds other work).

    ``operands`` and ``structs`` may hold ``None`` (no bias, no bias gradient). The custom call
    passes only the arrays, so its handler puts ``None`` back where they leave a gap; a target
    name serves one pattern of gaps and one setting.
    """
    operand_gaps = tuple(k for k, value in enumerate(operands) if value is None)
    result_gaps = tuple(k for k, struct in enumerate(structs) if struct is None)
    settings = _settings.Settings.here()

    if _ffi_refusal():

        def host(*arrays: Any) -> tuple[Any, ...]:
            results = [None if s is None else np.empty(s.shape, s.dtype) for s in structs]
            _run(op, settings, [None if value is None else np.asarray(value) for value in arrays], results)
            return tuple(results)

        return tuple(jax.pure_callback(host, tuple(structs), *operands, vmap_method=_VMAP))

    expected_operands = len(op.operand_names) - len(operand_gaps)

    def work(arrays: list[np.ndarray], buffers: list[np.ndarray]) -> None:
        if len(arrays) != expected_operands:
            raise ValueError(f"the op takes {expected_operands} operands; got {len(arrays)}")
        _run(op, settings, _with_gaps(arrays, operand_gaps), _with_gaps(buffers, result_gaps))

    name = target + "".join(f"_no{k}" for k in operand_gaps) + settings.suffix()
    _xla_ffi.register(name, work)
    present = [struct for struct in structs if struct is not None]
    called = _xla_ffi.call(name, present, [value for value in operands if value is not None], _VMAP)
    return tuple(_with_gaps(list(called), result_gaps))


def _with_gaps(values: list[Any], gaps: tuple[int, ...]) -> list[Any]:
    for k in gaps:
        values.insert(k, None)
    return values


def _gradient_shapes(p: Problem) -> list[tuple[int, ...] | None]:
    return [p.W.shape, None if p.b is None else p.b.shape, p.A.shape]


def _forward_fill(p: Problem, results: list[Any]) -> None:
    results[0][...] = ops.forward(p.X, p.W, p.b, p.A, check_finite=False)


def _backward_fill(p: Problem, results: list[Any]) -> None:
    ops.fused_step(p, UPSTREAM, 1.0, out=Gradients(*results))


_FORWARD = _Op(
    ("X", "W", "b", "A"),
    ("F",),
    lambda X, W, b, A: check_problem(X, W, b, A, check_finite=False),
    lambda p: [(p.T, p.n)],
    _forward_fill,
)
_BACKWARD = _Op(
    ("X", "W", "b", "A", "dF"),
    ("grad W", "grad b", "grad A"),
    lambda X, W, b, A, dF: check_problem(X, W, b, A, dF, check_finite=False, y_name="dF"),
    _gradient_shapes,
    _backward_fill,
)


@jax.custom_vjp
def _forward(X: Any, W: Any, b: Any, A: Any) -> Any:
    return _call("mtrl_fast_forward", _FORWARD, [_struct((A.shape[0], X.shape[-2]), X.dtype)], [X, W, b, A])[0]


def _forward_fwd(X: Any, W: Any, b: Any, A: Any) -> tuple[Any, Any]:
    return _forward(X, W, b, A), (X, W, b, A)


def _forward_bwd(residuals: Any, dF: Any) -> tuple[Any, ...]:
    X, W, b, A = residuals
    gW, gb, gA = _call("mtrl_fast_backward", _BACKWARD, _grad_structs(W, b, A), [X, W, b, A, dF])
    return jnp.zeros_like(X), gW, gb, gA


_forward.defvjp(_forward_fwd, _forward_bwd)


def forward(X: ArrayLike, W: ArrayLike, b: ArrayLike | None, A: ArrayLike, *, check_finite: bool = True) -> jax.Array:
    """Outputs ``F (T, n)`` of every task's network; see ``mtrl_fast.forward``.

    Parameters
    ----------
    X : Array, shape (n, d) or (T, n, d)
    W : Array, shape (m, d)
    b : Array, shape (m,), or None
    A : Array, shape (T, m)
    check_finite : bool, default True
        Raise ``ValueError`` if a concrete input holds NaN or Inf (tracers are not checked).

    Returns
    -------
    Array, shape (T, n)
        Differentiable with respect to ``W``, ``b`` and ``A``.
    """
    _check(X, W, b, A, check_finite=check_finite)
    return _forward(jax.lax.stop_gradient(X), W, b, A)


def _make_loss(name: str) -> Callable[..., jax.Array]:
    code = loss_id(name)

    def fill(p: Problem, results: list[Any]) -> None:
        value, _ = ops.fused_step(p, code, 1.0 / (p.T * p.n), out=Gradients(*results[1:]))
        results[0][...] = value

    # The operands the trace let through pass these checks: the shapes were checked at trace
    # time, and the labels are not checked (``loss=None``), as the module says.
    op = _Op(
        ("X", "Y", "W", "b", "A"),
        ("loss", "grad W", "grad b", "grad A"),
        lambda X, Y, W, b, A: check_problem(X, W, b, A, Y, loss=None, check_finite=False),
        lambda p: [(), *_gradient_shapes(p)],
        fill,
    )

    def call(X: Any, Y: Any, W: Any, b: Any, A: Any) -> Any:
        structs = (_struct((), X.dtype),) + _grad_structs(W, b, A)
        return _call(f"mtrl_fast_loss_{name}", op, structs, [X, Y, W, b, A])

    @jax.custom_vjp
    def mean_loss(X: Any, Y: Any, W: Any, b: Any, A: Any) -> Any:
        return call(X, Y, W, b, A)[0]

    def fwd(X: Any, Y: Any, W: Any, b: Any, A: Any) -> tuple[Any, Any]:
        value, gW, gb, gA = call(X, Y, W, b, A)
        return value, (X, Y, gW, gb, gA)

    def bwd(residuals: Any, d_value: Any) -> tuple[Any, ...]:
        X, Y, gW, gb, gA = residuals
        return (jnp.zeros_like(X), jnp.zeros_like(Y), d_value * gW, None if gb is None else d_value * gb, d_value * gA)

    mean_loss.defvjp(fwd, bwd)
    return mean_loss


_LOSS_FUNCTIONS: dict[str, Callable[..., jax.Array]] = {}


def loss(
    X: ArrayLike,
    Y: ArrayLike,
    W: ArrayLike,
    b: ArrayLike | None,
    A: ArrayLike,
    loss: str = "logistic",
    *,
    check_finite: bool = True,
) -> jax.Array:
    """The mean over tasks of each task's mean loss, a 0-d array differentiable with respect to
    ``W``, ``b`` and ``A`` (``mtrl_fast.loss_and_grad`` in one fused call).

    Parameters
    ----------
    X : Array, shape (n, d) or (T, n, d)
    Y : Array, shape (T, n)
        Targets in X's dtype, or integers (converted to it); -1 or +1 for the classification
        losses (checked when ``Y`` is concrete, not when it is a tracer under ``jit``).
    W, b, A : Array
        Parameters as in :func:`forward`.
    loss : str
        One of ``mtrl_fast.LOSSES``.
    check_finite : bool, default True
        Raise ``ValueError`` if a concrete input holds NaN or Inf (tracers are not checked).

    Returns
    -------
    Array, shape ()
    """
    loss_id(loss)
    if hasattr(X, "dtype") and hasattr(Y, "dtype") and np.dtype(Y.dtype).kind in "iu":
        Y = jnp.asarray(Y).astype(jax.dtypes.canonicalize_dtype(np.dtype(X.dtype)))  # as the NumPy API takes them
    _check(X, W, b, A, Y, loss=loss, check_finite=check_finite)
    if loss not in _LOSS_FUNCTIONS:
        _LOSS_FUNCTIONS[loss] = _make_loss(loss)
    return _LOSS_FUNCTIONS[loss](jax.lax.stop_gradient(X), jax.lax.stop_gradient(Y), W, b, A)
