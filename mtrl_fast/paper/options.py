"""The settings of a reproduction run, each declared once: on its field of the grid or of the
training configuration, whose ``metadata["option"]`` (an :class:`Option`, made by :func:`setting`)
says how ``mtrl-fast reproduce`` takes it.

The command's flags, their help and defaults, ``--quick``'s help, and the map from the parsed
options to a grid are generated from those fields (:func:`options_of`, :func:`apply`); the cells'
fingerprints read the grid's fields, so a new setting is one field here and there, nothing else.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any

#: How an option's text is read: one of ``mtrl_fast._cli_types``' value checks, ``"choice"`` (one of
#: ``choices``) or ``"names"`` (comma-separated, from ``choices``).
KINDS = (
    "positive_int",
    "positive_ints",
    "nonnegative_int",
    "positive_float",
    "nonnegative_float",
    "probability_below_half",
    "choice",
    "names",
)


@dataclass(frozen=True)
class Option:
    """How a field is set from the command line.

    Attributes
    ----------
    kind : str
        One of :data:`KINDS`.
    help : str or callable
        What it is (a callable for help generated from a registry); the default is added.
    flag : str or None
        The flag, when it is not ``--`` and the field's name with dashes.
    choices : tuple or callable or None
        The values allowed, for ``"choice"`` and ``"names"``.
    default_text : str or None
        The default as ``--help`` says it, when the field's value does not say it well (``""``:
        the help says it).
    note : str
        Added after the default (which studies read it, say).
    """

    kind: str
    help: str | Callable[[], str]
    flag: str | None = None
    choices: tuple | Callable[[], tuple] | None = None
    default_text: str | None = None
    note: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got {self.kind!r}")
        if (self.kind in ("choice", "names")) != (self.choices is not None):
            raise ValueError("choices are given for the kinds 'choice' and 'names', and only for them")

    def allowed(self):
        return self.choices() if callable(self.choices) else self.choices

    def describe(self, default):
        """The help, with ``default`` (the value a run gets without the option) and the note."""
        told = self.help() if callable(self.help) else self.help
        if self.kind == "names":
            told += f", from {', '.join(self.allowed())}"
        default = text(default) if self.default_text is None else self.default_text
        extra = "; ".join(part for part in (default and f"default {default}", self.note) if part)
        return f"{told} ({extra})" if extra else told


def setting(default, kind, help, *, flag=None, choices=None, default_text=None):
    """A dataclass field with ``default`` that ``mtrl-fast reproduce`` sets (see :class:`Option`)."""
    option = Option(kind, help, flag, choices, default_text)
    return field(default=default, metadata={"option": option})


@dataclass(frozen=True)
class Declared:
    """A setting found on a configuration: the path of fields to it, its option and its default."""

    path: tuple[str, ...]
    option: Option
    default: Any

    @property
    def flag(self):
        return self.option.flag or "--" + self.path[-1].replace("_", "-")

    @property
    def dest(self):
        """The parsed options' attribute."""
        return ".".join(self.path)


def options_of(config) -> Iterator[Declared]:
    """Every setting of ``config`` (an instance of a dataclass), nested configurations included, in
    field order, with the value ``config`` holds as its default."""
    for item in fields(config):
        value = getattr(config, item.name)
        if "option" in item.metadata:
            yield Declared((item.name,), item.metadata["option"], value)
        elif is_dataclass(value):
            for inner in options_of(value):
                yield Declared((item.name, *inner.path), inner.option, inner.default)


def text(value):
    """A setting's value as the command line writes it."""
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def apply(config, changes):
    """``config`` with ``changes`` (``{path: value}``) made, nested configurations included; raises
    ``ValueError`` from the configurations' own checks."""
    own = {path[0]: value for path, value in changes.items() if len(path) == 1}
    for name in dict.fromkeys(path[0] for path in changes if len(path) > 1):
        inner = {path[1:]: value for path, value in changes.items() if len(path) > 1 and path[0] == name}
        own[name] = apply(getattr(config, name), inner)
    return replace(config, **own) if own else config


def from_parsed(base, args):
    """``base`` with every setting that the parsed options ``args`` give (an attribute per setting,
    named by its ``dest``; ``None`` where not given)."""
    given = ((d.path, getattr(args, d.dest, None)) for d in options_of(base))
    return apply(base, {path: value for path, value in given if value is not None})


def differences(config, base):
    """The settings where ``config`` differs from ``base``: ``[(flag, value)]``, for a summary."""
    held = {declared.path: declared.default for declared in options_of(base)}
    return [(d.flag, d.default) for d in options_of(config) if held.get(d.path) != d.default]
