"""Argument checks and coercion, in plain Python and NumPy, before any compiled code runs.

Every error names the argument and the shape or dtype it expected.
"""

import math
from typing import NamedTuple

import numpy as np

from .losses import CLASSIFICATION_LOSSES, DTYPES, PER_TASK, SHARED, loss_id

FLOAT_DTYPES = tuple(np.dtype(name) for name in DTYPES)


class Problem(NamedTuple):
    """Checked, C-ordered inputs of one call, with the sizes read from them."""

    X: np.ndarray
    W: np.ndarray
    b: np.ndarray | None
    A: np.ndarray
    Y: np.ndarray | None
    layout: str  # SHARED (X is (n, d)) or PER_TASK (X is (T, n, d))
    n: int
    d: int
    m: int
    T: int


class ArrayMeta(NamedTuple):
    """What :func:`check_shapes` reads of an array (with ``convert=False``): a framework's tensor
    or tracer described without touching its data."""

    shape: tuple[int, ...]
    ndim: int
    dtype: np.dtype


def _as_array(name, value, shape_text, convert):
    """``value`` as a native-byte-order ndarray; ``None`` and masked arrays are refused by name."""
    if value is None:
        raise TypeError(f"{name} must be an array of shape {shape_text}, not None")
    if isinstance(value, np.ma.MaskedArray):
        # np.asarray would silently drop the mask, and a masked loss has no single sound meaning.
        raise TypeError(
            f"{name} is a masked array; mtrl_fast ignores no entries: pass {name}.filled(value), "
            f"or drop the masked rows, as a plain ndarray"
        )
    if not convert:
        return value
    array = np.asarray(value)
    if not array.dtype.isnative:  # big-endian data from a file, say: convert, as NumPy itself would compute
        array = array.astype(array.dtype.newbyteorder("="))
    return array


def _as_float_array(name, value, ndim, shape_text, convert=True):
    array = _as_array(name, value, shape_text, convert)
    if array.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64; got {array.dtype}")
    if array.ndim not in ndim:
        raise ValueError(f"{name} must have shape {shape_text}; got {array.ndim}-d shape {array.shape}")
    return array


def _check_shape(name, array, expected, shape_text):
    if array.shape != expected:
        raise ValueError(f"{name} must have shape {shape_text} = {expected}; got {array.shape}")


def _all_finite(array):
    """Whether every entry is finite.

    ``x . x`` is NaN or Inf exactly when some entry is (squares cannot cancel), and BLAS reads the
    array once without the temporary of ``isfinite`` (see docs/performance.md); a sum of squares
    that overflows, or an array that is not contiguous, is checked entry by entry.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        return _all_finite_quiet(array)


def _all_finite_quiet(array):
    """:func:`_all_finite` inside the caller's ``np.errstate`` (which costs a microsecond a block:
    a step's checks enter one for all their arrays)."""
    if array.flags.c_contiguous and array.size:
        flat = array.reshape(-1)
        if math.isfinite(np.dot(flat, flat)):
            return True
    return bool(np.isfinite(array).all())


def require_finite(*named_arrays):
    """Raise ``ValueError`` naming the first of ``(name, array)`` pairs whose array holds NaN or
    Inf (an array ``None`` is skipped)."""
    with np.errstate(over="ignore", invalid="ignore"):
        for name, array in named_arrays:
            if array is not None and not _all_finite_quiet(array):
                raise ValueError(f"{name} contains NaN or Inf; pass check_finite=False to skip this check")


def require_labels(Y, loss, y_name="Y"):
    """Raise ``ValueError`` unless every label is -1 or +1, for a classification ``loss``."""
    if loss in CLASSIFICATION_LOSSES and not (np.abs(Y) == 1).all():
        bad = Y[np.abs(Y) != 1].flat[0]
        raise ValueError(f"{y_name} must hold labels -1 or +1 for the {loss!r} loss; found {bad!r}")


_NOT_GIVEN = object()  # forward has no Y; None passed as Y is an error


def check_shapes(X, W, b, A, Y=_NOT_GIVEN, y_name="Y", convert=True):
    """Check shapes and dtypes and return ``(X, W, b, A, Y, layout, n, d, m, T)``.

    With ``convert=False`` the arguments are taken as they are, as long as they have ``shape``,
    ``ndim`` and ``dtype`` (a JAX tracer at trace time, say): nothing is read or copied.
    """
    X = _as_float_array("X", X, (2, 3), "(n, d) or (T, n, d)", convert)
    layout = SHARED if X.ndim == 2 else PER_TASK
    W = _as_float_array("W", W, (2,), "(m, d)", convert)
    A = _as_float_array("A", A, (2,), "(T, m)", convert)
    m, d = W.shape
    T = A.shape[0]
    n = X.shape[-2]
    empty = [f"{size}=0" for size, value in (("n", n), ("d", d), ("m", m), ("T", T)) if value == 0]
    if empty:
        name = next(name for name, array in (("X", X), ("W", W), ("A", A)) if 0 in array.shape)
        raise ValueError(
            f"{name} is empty: {', '.join(empty)}; every dimension must be at least 1 "
            f"(X {X.shape}, W {W.shape}, A {A.shape})"
        )
    x_text = "(n, d)" if layout == SHARED else "(T, n, d)"
    x_expected = (n, d) if layout == SHARED else (T, n, d)
    _check_shape(
        "X", X, x_expected, f"{x_text} with d = W.shape[1]" + ("" if layout == SHARED else " and T = A.shape[0]")
    )
    _check_shape("A", A, (T, m), "(T, m) with m = W.shape[0]")
    if b is not None:
        b = _as_float_array("b", b, (1,), "(m,)", convert)
        _check_shape("b", b, (m,), "(m,) with m = W.shape[0]")

    dtype = X.dtype
    for name, array in (("W", W), ("b", b), ("A", A)):
        if array is not None and array.dtype != dtype:
            raise TypeError(
                f"{name} has dtype {array.dtype} but X has {dtype}; all arrays must share one "
                "float dtype (float32 or float64)"
            )

    if Y is _NOT_GIVEN:
        Y = None
    else:
        Y = _as_array(y_name, Y, "(T, n)", convert)
        if np.dtype(Y.dtype).kind in "iu":
            # Integer labels compute in the float dtype; a metadata-only check just accepts them.
            Y = Y.astype(dtype) if convert else ArrayMeta(tuple(Y.shape), len(Y.shape), dtype)
        elif Y.dtype != dtype:
            raise TypeError(f"{y_name} must have dtype {dtype} (like X) or an integer dtype; got {Y.dtype}")
        _check_shape(y_name, Y, (T, n), "(T, n) with T = A.shape[0] and n = X.shape[-2]")
    return X, W, b, A, Y, layout, n, d, m, T


def _writable(array):
    """``array``, or a copy of it where the kernels would refuse it (read-only: memory-mapped,
    buffer-backed, broadcast). Only for the small operands that reach compiled code (``b``, ``A``,
    ``Y``); ``X`` and ``W`` only meet BLAS, which reads anything."""
    return array if array is None or array.flags.writeable else array.copy()


def check_requests(first_layer: bool, gram: bool) -> None:
    """What a step is asked to compute must fit together: the Gram matrix needs the first layer."""
    if gram and not first_layer:
        raise ValueError("gram=True needs first_layer=True: D^T D comes from the first layer's back-propagation")


def check_problem(X, W, b, A, Y=_NOT_GIVEN, loss=None, check_finite=True, y_name="Y"):
    """Validate the arguments of ``forward`` / ``loss_and_grad`` / ``backward`` and return them
    C-ordered.

    ``Y`` and ``loss`` are checked only when given (``loss_and_grad``; ``backward`` passes its
    upstream gradient as ``Y`` under the name ``y_name``). Integer arrays are accepted for ``Y``
    and converted to the working dtype.
    """
    if loss is not None:
        loss_id(loss)
    X, W, b, A, Y, layout, n, d, m, T = check_shapes(X, W, b, A, Y, y_name)

    if check_finite:
        require_finite(("X", X), ("W", W), ("b", b), ("A", A), (y_name, Y))
    if Y is not None:
        require_labels(Y, loss)

    return Problem(
        X=np.ascontiguousarray(X),
        W=np.ascontiguousarray(W),
        b=None if b is None else _writable(np.ascontiguousarray(b)),
        A=_writable(np.ascontiguousarray(A)),
        Y=None if Y is None else _writable(np.ascontiguousarray(Y)),
        layout=layout,
        n=n,
        d=d,
        m=m,
        T=T,
    )
