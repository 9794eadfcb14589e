"""The package's shape: layers that import only downwards, no import cycle (imports inside functions
included), no private name taken from another subpackage, no module over 500 lines, no function over 80
lines outside the compiled kernels."""

import ast
from pathlib import Path

import pytest

import mtrl_fast

ROOT = Path(mtrl_fast.__file__).parent
#: Each module (or subpackage) and its layer: a module imports from its own layer or below.
LAYERS = {
    0: {"_version", "_platform", "_progress", "_profile", "_scratch", "_openmp", "losses", "gradients"},
    1: {"_runtime", "_validate", "_mkl"},
    2: {"_kernels", "gemms"},
    3: {"ops", "reference", "_settings"},
    4: {"rounds", "torch", "_xla_ffi", "jax"},
    5: {"_info", "__init__"},
    6: {"paper"},
    7: {"bench"},
    8: {"cli", "_commands", "_cli_types", "__main__"},
}
MAX_LINES = 500
#: The longest function (its docstring included), outside ``_kernels/``, whose kernels are written flat
#: for Numba to compile.
MAX_FUNCTION_LINES = 80


def _modules():
    """``{dotted name: path}`` of every module of the installed package."""
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = ["mtrl_fast", *path.relative_to(ROOT).with_suffix("").parts]
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _imports(name, path):
    """``(module imported, name taken or None)`` for every import of the package in ``path``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((alias.name, None) for alias in node.names if alias.name.startswith("mtrl_fast"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if not base.startswith("mtrl_fast"):
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield (full, None) if full in MODULES else (base, alias.name)


def _owner(module):
    """The module's home: ``paper.studies.recovery`` -> ``paper``, ``ops`` -> ``ops``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer(module):
    owner = _owner(module)
    return next(level for level, members in LAYERS.items() if owner in members)


EDGES = {name: set(_imports(name, path)) for name, path in MODULES.items()}


def test_every_module_has_a_layer():
    assert all(any(_owner(name) in members for members in LAYERS.values()) for name in MODULES)


def test_imports_only_run_down():
    upwards = [
        f"{name} (layer {_layer(name)}) imports {target} (layer {_layer(target)})"
        for name, targets in EDGES.items()
        for target, _ in targets
        if target in MODULES and _layer(target) > _layer(name)
    ]
    assert upwards == []


def _cycle(graph):
    """A cycle of ``graph`` (a list of modules), or ``None``."""
    state = {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in graph.get(node, ()):
            if state.get(nxt) == "open":
                return trail[trail.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt, trail + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for start in graph:
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_no_import_cycle():
    graph = {name: [t for t, _ in targets if t in MODULES and t != name] for name, targets in EDGES.items()}
    assert _cycle(graph) is None


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) in (["a", "b", "c", "a"], ["b", "c", "a", "b"])
    assert _cycle({"a": ["b"], "b": []}) is None


def _subpackage(module):
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def test_no_private_name_from_another_subpackage():
    taken = [
        f"{name} takes {source}.{what}"
        for name, targets in EDGES.items()
        for source, what in targets
        if what is not None
        and what.startswith("_")
        and not what.startswith("__")
        and source in MODULES
        and _subpackage(source) != _subpackage(name)
    ]
    assert taken == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_over_the_line_limit(name):
    assert len(MODULES[name].read_text().splitlines()) <= MAX_LINES


def _long_functions(source):
    return [
        f"{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]


@pytest.mark.parametrize("name", sorted(name for name in MODULES if not name.startswith("mtrl_fast._kernels")))
def test_no_function_over_the_line_limit(name):
    assert _long_functions(MODULES[name].read_text()) == []


def test_the_function_limit_finds_a_long_function():
    body = "\n".join(f"    x{k} = {k}" for k in range(MAX_FUNCTION_LINES))
    assert _long_functions(f"def long():\n{body}\n") == ["long: 81 lines"]
