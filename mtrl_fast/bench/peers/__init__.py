"""The implementations a step, a training round and a paper cell are compared across: ours, the
NumPy reference, and the peers, each a :class:`Peer` class with one home.

A peer is a module of this folder holding a subclass of :class:`Peer` with a ``name``; it owns
what it needs (``requires``, ``extra``), its step (``prepare``), its training round
(``prepare_round``), its whole paper cell as its users write it (``cell``, for peers with an
autograd of their own) and its training-loop step (``training_step``, for the framework-op
comparison). Nothing else names it: ``mtrl-fast bench``'s choices and help, the cell benchmark, the
torch-step benchmark and the asv suite take peers from :func:`names` and :func:`get`. A peer kept
outside the package (your own implementation, say) is a module on the path named in the
``MTRL_FAST_PEERS`` environment variable (comma-separated), found the same way.
"""

import os
import pkgutil
from collections.abc import Callable
from functools import cache
from importlib import import_module
from typing import ClassVar, NamedTuple

from ...gradients import Gradients

#: Modules outside this folder that hold peers (comma-separated), for implementations of one's own.
VARIABLE = "MTRL_FAST_PEERS"
#: Our kernels' name.
OURS = "mtrl_fast"


class PeerModuleError(ImportError):
    """A module named in ``MTRL_FAST_PEERS`` does not import."""


class PreparedStep(NamedTuple):
    """A step bound to its inputs: ``run()`` to time it, ``result()`` for ``(value, Gradients)``."""

    run: Callable[[], object]
    result: Callable[[], tuple]


class Peer:
    """One implementation of the step, as its users write it. Subclasses set ``name`` and override
    ``prepare`` (and the other methods where they have them)."""

    #: The name users pick it by (``mtrl-fast bench --backends``).
    name: ClassVar[str] = ""
    #: ``"ours"`` (our kernels), ``"reference"`` (the correctness reference), ``"peer"`` (a
    #: competitor: it runs with its users' threading settings and counts for "vs best peer") or
    #: ``"op"`` (our op inside a framework: our settings).
    role: ClassVar[str] = "peer"
    #: The module it imports, and the extra that installs it.
    requires: ClassVar[str | None] = None
    extra: ClassVar[str] = "peers"
    #: Whether ``mtrl-fast bench`` runs it without being asked.
    default: ClassVar[bool] = True

    def available(self):
        """``(True, "")``, or ``(False, why)`` when what it requires is not installed."""
        if self.requires is None:
            return True, ""
        try:
            import_module(self.requires)
        except ImportError:
            return False, f"{self.requires} is not installed (pip install 'mtrl_fast[{self.extra}]')"
        return True, ""

    def version(self):
        """The version of what it runs on."""
        return import_module(self.requires).__version__ if self.requires else ""

    def set_threads(self, k):
        """Use ``k`` threads (called once, first, in the process that runs it)."""

    def prepare(self, X, Y, W, b, A, loss):
        """One step (forward, loss, every gradient) on these inputs: a :class:`PreparedStep`."""
        raise NotImplementedError

    def prepare_round(self, X, Y, W, b, A, loss):
        """A training round (``workload.ROUND``) from these inputs: a :class:`PreparedStep` whose
        ``result()`` gives the objective at the first-layer step and ``(W, b, A)`` after it."""
        raise NotImplementedError

    #: ``cell(spec, M, V, W0, seed, sampler)``: a whole paper cell, returning the first layer after
    #: it (``mtrl_fast.bench.cell``); ``None`` where the peer does not run cells.
    cell: ClassVar[Callable | None] = None

    #: ``training_step(X, Y, params, loss)``: one optimizer step of a training loop on framework
    #: tensors ``params = [W, b, A]`` (``mtrl_fast.bench.torch_step``); ``None`` where it has none.
    training_step: ClassVar[Callable | None] = None


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


def _modules():
    yield from (f"{__name__}.{module.name}" for module in pkgutil.iter_modules(__path__))
    yield from (name.strip() for name in os.environ.get(VARIABLE, "").split(",") if name.strip())


@cache
def _registry(extra_modules):
    """``{name: class}``: ours, the reference, then the peers in the order their modules list them
    (``extra_modules``, the variable's value, keys the cache: a changed variable is read anew)."""
    found = {}
    for module_name in _modules():
        try:
            module = import_module(module_name)
        except ImportError as error:
            raise PeerModuleError(f"{VARIABLE} names {module_name!r}, which does not import: {error}") from error
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Peer) and value.name and value.__module__ == module_name:
                if value.name in found and found[value.name] is not value:
                    raise ValueError(f"two peers are called {value.name!r}: {found[value.name]} and {value}")
                found[value.name] = value
    order = {"ours": 0, "reference": 1}
    return dict(sorted(found.items(), key=lambda item: order.get(item[1].role, 2)))


def registry():
    """``{name: Peer subclass}`` of every implementation found (this folder, then ``MTRL_FAST_PEERS``)."""
    return _registry(os.environ.get(VARIABLE, ""))


def names(role=None):
    """Every implementation's name, or those of one ``role``."""
    return tuple(name for name, peer in registry().items() if role is None or peer.role == role)


def defaults():
    """What ``mtrl-fast bench`` runs unless told: ours and the default peers."""
    return tuple(
        name for name, peer in registry().items() if peer.role == "ours" or (peer.default and peer.role == "peer")
    )


def get(name):
    """The implementation called ``name``, an instance of its class."""
    found = registry()
    if name not in found:
        raise ValueError(f"backend must be one of {tuple(found)}; got {name!r}")
    return found[name]()
