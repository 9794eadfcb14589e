"""The GEMM setting: a process default (``set_gemm``, ``MTRL_FAST_GEMM``) and a per-thread block
(``gemm``), and the provider a setting runs a dtype's products on (``resolve``)."""

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numba
import numpy as np

from .. import _runtime
from . import auto, providers

_thread = threading.local()


def _from_environment() -> str | None:
    chosen = os.environ.get("MTRL_FAST_GEMM")
    if not chosen:
        return None
    try:
        return providers.check(chosen)
    except ValueError as error:
        raise ValueError(f"MTRL_FAST_GEMM: {error}") from None


# ``None``: nobody chose; NumPy's calls then run on "numpy" and mtrl_fast.torch's on "torch".
_default: str | None = _from_environment()


def set_gemm(name: str) -> None:
    """Run every step's matrix products on ``name`` from now on (in every Python thread without a
    :func:`gemm` block of its own, and in ``mtrl_fast.torch``'s ops).

    Parameters
    ----------
    name : {"numpy", "torch", "mkl", "auto"}
        NumPy's BLAS (the default; ``MTRL_FAST_GEMM`` sets the choice at import), PyTorch's
        matmul, Intel MKL (``pip install 'mtrl_fast[mkl]'``), or ``"auto"``: the fastest of the
        installed providers for each dtype, timed once per machine (see :func:`mtrl_fast.gemms.auto_timings`).

    Raises
    ------
    ValueError
        An unknown name, or a provider that is not installed (the message names its extra).

    Notes
    -----
    Results are bitwise repeatable for one provider and thread count; two providers differ in
    the last bits of the products.
    """
    global _default
    _default = providers.check(name)


def chosen() -> str | None:
    """The choice made for this Python thread (its :func:`gemm` block, else :func:`set_gemm` or
    ``MTRL_FAST_GEMM``), or ``None`` where nobody chose."""
    return getattr(_thread, "name", None) or _default


def get_gemm() -> str:
    """The GEMM setting of this Python thread's NumPy calls (see :func:`set_gemm`); ``"auto"``
    stays ``"auto"`` (:func:`resolve` names the provider it picks for a dtype)."""
    return chosen() or "numpy"


def torch_ops_gemm() -> str:
    """The setting ``mtrl_fast.torch``'s ops run on: a choice made (a block, ``set_gemm``,
    ``MTRL_FAST_GEMM``); else, where GNU OpenMP's workers spin between parallel regions (PyTorch was
    imported before mtrl_fast, so the passive wait policy is not in force), PyTorch's own matmul,
    which runs on that same pool of threads, while NumPy's OpenBLAS would bring a second pool of
    spinning threads to the same cores; else ``"auto"``, the fastest provider measured on this
    machine (docs/performance.md has both measurements)."""
    choice = chosen()
    if choice is not None:
        return choice
    return "torch" if _runtime.openmp_workers_spin() else providers.AUTO


@contextmanager
def gemm(name: str) -> Iterator[None]:
    """Run this Python thread's products on ``name`` inside the block (see :func:`set_gemm`).

    Parameters
    ----------
    name : {"numpy", "torch", "mkl", "auto"}

    Examples
    --------
    >>> import mtrl_fast
    >>> with mtrl_fast.gemm("numpy"):
    ...     mtrl_fast.get_gemm()
    'numpy'
    """
    previous = getattr(_thread, "name", None)
    _thread.name = providers.check(name)
    try:
        yield
    finally:
        _thread.name = previous


def resolve(setting: str, dtype: np.dtype[Any] | type) -> str:
    """The provider that ``setting`` runs ``dtype``'s products on (``"auto"``'s choice, or itself)."""
    if setting != providers.AUTO:
        return setting
    timings = auto._auto
    if (
        timings is None
        or timings["key"]["threads"] != numba.get_num_threads()
        or timings["key"]["openmp"] != auto._openmp_key()
    ):
        timings = auto.auto_timings()  # the cheap checks first: this runs at every product
        assert timings is not None
    return str(timings["choice"][np.dtype(dtype).name])
