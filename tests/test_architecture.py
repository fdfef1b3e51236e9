"""The package's import graph: no cycle anywhere, and the modules of ``hddgeo.distill`` in layers.

Every import is read from the source with ``ast``, at module level and inside functions alike (a function-level
import hides a cycle from Python's import machinery, not from a reader), relative imports resolved.

How a package's ``__init__`` counts: an ``__init__`` is the package's front door and re-exports its children, so its
own imports of modules inside its package are not edges (``hddgeo/__init__.py`` importing ``hddgeo.geometry`` would
otherwise close a cycle with every module that reads ``hddgeo.__version__``).  An import of a name *from* a package
goes to the module that defines the name: the submodule of that name, else the submodule the ``__init__``
re-exports it from, else the ``__init__`` itself (a name the ``__init__`` defines).  So a child that imports from its
package's front door what a sibling defines depends on that sibling, and any cycle among real modules is found.
"""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "hddgeo"

# hddgeo.distill, lowest first: each module may import only modules before it
DISTILL_LAYERS = ["_hooks", "presets", "synset", "memory", "distributed", "methods", "dance", "geodm", "config",
                  "runner", "results", "cell", "executors", "study", "spec"]


def _name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict:
    return {_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _raw_imports(path: Path):
    """``(module, names)`` of every import in ``path`` (``names`` empty for ``import x``), relative ones resolved."""
    is_init = path.name == "__init__.py"
    package = _name(path) if is_init else _name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            yield module, tuple(a.name for a in node.names)


def _reexports(modules: dict) -> dict:
    """``{package: {name: defining submodule}}`` of what each ``__init__`` imports from inside its package."""
    out = {}
    for name, path in modules.items():
        if path.name != "__init__.py":
            continue
        for module, names in _raw_imports(path):
            if module.startswith(name + ".") and module in modules:
                out.setdefault(name, {}).update({n: module for n in names})
    return out


def _graph() -> dict:
    modules = _modules()
    reexports = _reexports(modules)
    graph = {}
    for name, path in modules.items():
        is_init = path.name == "__init__.py"
        edges = set()
        for module, names in _raw_imports(path):
            if not (module == "hddgeo" or module.startswith("hddgeo.")):
                continue
            targets = [module] if not names else [
                f"{module}.{n}" if f"{module}.{n}" in modules else reexports.get(module, {}).get(n, module)
                for n in names]
            for target in targets:
                while target not in modules:  # hddgeo.x.y where y is a name in hddgeo.x
                    target = target.rpartition(".")[0]
                if is_init and target.startswith(name + "."):
                    continue  # the front door re-exporting its children (see the module's docstring)
                if target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def _cycle(graph: dict):
    """One cycle of ``graph`` as a list of modules, or ``None``."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_graph_sees_function_level_and_relative_imports():
    graph = _graph()
    assert "hddgeo.distill.config" in graph["hddgeo.distill.runner"]  # a relative import at module level
    assert "hddgeo.tensorboard" in graph["hddgeo.distill.runner"]  # imported inside a method only
    assert "hddgeo.distill.spec" in graph["hddgeo.compare"]  # imported inside a function, relative
    assert "hddgeo.distill.runner" in graph["hddgeo.distill.cell"]


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_package_has_no_import_cycle():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("module", DISTILL_LAYERS)
def test_distill_modules_import_only_lower_layers(module):
    graph = _graph()
    assert set(DISTILL_LAYERS) == {n.rpartition(".")[2] for n in graph if n.startswith("hddgeo.distill.")}
    allowed = {f"hddgeo.distill.{m}" for m in DISTILL_LAYERS[:DISTILL_LAYERS.index(module)]}
    inside = {t for t in graph[f"hddgeo.distill.{module}"] if t.startswith("hddgeo.distill")}
    assert inside <= allowed, f"distill/{module}.py imports {sorted(inside - allowed)}, a layer above it"
    above = {t for t in graph[f"hddgeo.distill.{module}"] if t in ("hddgeo.cli", "hddgeo.compare")}
    assert not above, f"distill/{module}.py imports {sorted(above)}"


def test_the_command_line_holds_no_compare_logic():
    """``hddgeo compare`` is :func:`hddgeo.compare.compare`; the command only parses and prints."""
    tree = ast.parse((PKG / "cli.py").read_text())
    compare_fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "_compare")
    calls = {n.func.id if isinstance(n.func, ast.Name) else n.func.attr
             for n in ast.walk(compare_fn) if isinstance(n, ast.Call)}
    assert "compare" in calls
    assert not calls & {"read_runs", "write_report", "claims_table", "load_spec", "compare_evaluations"}
    run = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "_run")
    assert not any(isinstance(n, ast.If) for n in ast.walk(run)), "cli._run dispatches through COMMANDS"


def test_the_loop_function_is_short():
    tree = ast.parse((PKG / "distill" / "runner.py").read_text())
    distil = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "_distil")
    assert distil.end_lineno - distil.lineno + 1 <= 60
    closes = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
              and n.func.attr == "close" and isinstance(n.func.value, ast.Name) and n.func.value.id == "bar"]
    assert not closes, "the progress bar is closed by its context manager"
