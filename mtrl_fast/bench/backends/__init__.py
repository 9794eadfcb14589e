"""One interface over the implementations we compare: ours, the NumPy reference, and the peers.

``get(name)`` returns a backend with ``available()`` and ``prepare(X, Y, W, b, A, loss)``;
``prepare`` converts the inputs once and returns a :class:`PreparedStep` whose ``run()`` does one
full step (forward, loss, all gradients) in the backend's own arrays and whose ``result()`` gives
that step's value and gradients as NumPy, for the agreement check. ``prepare_round`` does the
same for a training round (``workload.ROUND``); its ``result()`` gives the objective at the
first-layer step and the parameters ``(W, b, A)`` after the round. Peers that are not installed
say why in ``available()``.
"""

from collections.abc import Callable
from importlib import import_module
from typing import NamedTuple

from ...gradients import Gradients

# The registry: each backend's name and the module that builds it. A new peer is its module and a
# line here (and in PEERS, or FRAMEWORKS for a framework with its own autograd).
_MODULES = {
    "mtrl_fast": "_ours",  # our kernels
    "numpy": "_numpy",
    "torch": "_torch",
    "jax": "_jax",
    # The same step through the framework, with mtrl_fast.torch / mtrl_fast.jax's loss op in place
    # of the framework's own autograd graph.
    "torch+ours": "_torch",
    "jax+ours": "_jax",
    "reference": "_ours",  # the plain NumPy reference, for correctness
}
#: Our kernels' backend.
OURS = "mtrl_fast"
#: The frameworks with an autograd of their own that a step is compared against.
FRAMEWORKS = ("torch", "jax")
#: Every implementation of the step compared against ours.
PEERS = ("numpy",) + FRAMEWORKS
#: Every backend, by name.
BACKENDS = tuple(_MODULES)


class PreparedStep(NamedTuple):
    """A step bound to its inputs: ``run()`` to time it, ``result()`` for ``(value, Gradients)``."""

    run: Callable[[], object]
    result: Callable[[], tuple]


class Backend(NamedTuple):
    name: str
    available: Callable[[], tuple]  # () -> (bool, reason when not)
    prepare: Callable[..., PreparedStep]
    set_threads: Callable[[int], None]
    version: Callable[[], str]
    prepare_round: Callable[..., PreparedStep]  # a training round (workload.ROUND) from the same inputs


def round_step(loss_and_grad, X, Y, W, b, A, loss):
    """A training round on NumPy arrays with ``loss_and_grad`` as the step (ours, the reference's
    or the NumPy peer's): each run starts from the given parameters; ``result()`` gives the
    objective at the first-layer step and the parameters after the round."""
    from ...rounds import alternating_round
    from ..workload import ROUND

    last = {}

    def run():
        params = [W.copy(), None if b is None else b.copy(), A.copy()]
        value = alternating_round((X, Y), (X, Y), *params, loss=loss, step=loss_and_grad, **ROUND)
        last["out"] = (value, Gradients(*params))
        return last["out"]

    return PreparedStep(run, lambda: last["out"] if "out" in last else run())


def importable(module):
    """``(True, "")`` when ``module`` imports, else ``(False, how to install it)``: a peer's ``available``."""
    try:
        __import__(module)
    except ImportError:
        return False, f"{module} is not installed (pip install 'mtrl_fast[peers]')"
    return True, ""


def get(name):
    """The backend called ``name`` (one of :data:`BACKENDS`)."""
    if name not in _MODULES:
        raise ValueError(f"backend must be one of {BACKENDS}; got {name!r}")
    return import_module(f".{_MODULES[name]}", __name__).backend(name)
