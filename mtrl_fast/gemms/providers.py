"""The GEMM providers: each one's name, what brings it, and its ``matmul``, loaded at first use."""

import functools
import importlib.util
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import _mkl, _platform
from . import _torch

Matmul = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Provider:
    """One GEMM: its name, the distribution and extra that bring it, and how to load it."""

    name: str
    about: str
    distribution: str
    extra: str | None
    load: Callable[[], Matmul]

    def missing(self) -> str | None:
        """Why it cannot run here (a sentence naming the extra), or ``None`` when it can."""
        if self.extra is None or _installed(self.distribution):
            return None
        return f"gemm {self.name!r} needs {self.about}, which is not installed: pip install 'mtrl_fast[{self.extra}]'"


@functools.cache  # asked at every GEMM block (each torch or JAX op call): a look-up reads the filesystem
def _installed(distribution: str) -> bool:
    if distribution == "torch":  # found by its module: PyTorch may be a build without metadata
        return importlib.util.find_spec("torch") is not None
    return _platform.installed_version(distribution) is not None


#: The providers, by name. ``"auto"`` is not one: it chooses among them.
PROVIDERS: dict[str, Provider] = {
    provider.name: provider
    for provider in (
        Provider("numpy", "NumPy's BLAS", "numpy", None, lambda: np.matmul),
        Provider("torch", "PyTorch", "torch", "torch", lambda: _torch.matmul),
        Provider("mkl", "Intel MKL", "mkl", "mkl", _mkl.load),
    )
}
#: The setting that chooses among ``PROVIDERS`` (``set_gemm``, ``gemm``, ``MTRL_FAST_GEMM`` take either).
AUTO = "auto"

_loaded: dict[str, Matmul] = {}
_load_lock = threading.Lock()


def available() -> list[str]:
    """The providers installed here, in ``PROVIDERS``'s order."""
    return [name for name, provider in PROVIDERS.items() if provider.missing() is None]


def check(name: str) -> str:
    """``name`` if it is a provider installed here or ``"auto"``; else ``ValueError`` saying why."""
    choices = (*PROVIDERS, AUTO)
    if name not in choices:
        raise ValueError(f"gemm must be one of {choices}; got {name!r}")
    missing = PROVIDERS[name].missing() if name in PROVIDERS else None
    if missing is not None:
        raise ValueError(missing)
    return name


def matmul(name: str) -> Matmul:
    """The provider's ``matmul(left, right, out=None)``, loaded at its first use."""
    found = _loaded.get(name)
    if found is None:
        with _load_lock:
            found = _loaded.get(name) or PROVIDERS[check(name)].load()
            _loaded[name] = found
    return found
