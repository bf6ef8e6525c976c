"""The import graph of the edgeinfer package, read from its source with `ast` (nothing is imported).

Used by the layering tests: which module imports which (at module level and inside functions, but not under
`if TYPE_CHECKING:`, which never runs), the function-local imports of edgeinfer's own modules, and the cycles
among its packages.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "daemon" / "edgeinfer"


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. edgeinfer.pipeline
    target: str  # the imported edgeinfer module, e.g. edgeinfer.engines.chain
    local: bool  # inside a function (runs when called, not at import)
    line: int


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    if node.level == 0:
        base = node.module or ""
    else:
        parts = module.split(".")
        keep = len(parts) - node.level + (1 if is_package else 0)
        base = ".".join(parts[:keep] + ([node.module] if node.module else []))
    # `from . import wire` imports a submodule; `from .x import name` imports x
    if node.module is None:
        return [f"{base}.{alias.name}" for alias in node.names]
    return [base]


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path) -> list[Import]:
    module = module_name(path)
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub, local)
                continue
            inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.ImportFrom):
                targets = _resolve(module, is_package, child)
            elif isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            else:
                visit(child, inner)
                continue
            for target in targets:
                if target == "edgeinfer" or target.startswith("edgeinfer."):
                    found.append(Import(module, target, local, child.lineno))

    visit(ast.parse(path.read_text()), False)
    return found


def all_imports() -> list[Import]:
    return [imp for path in sorted(PACKAGE_DIR.rglob("*.py")) for imp in imports_of(path)]


def unit(module: str) -> str:
    """The package a module belongs to: edgeinfer.sources.video -> sources; transports count per transport
    (transports.zmq); a top-level module is its own unit (config, pipeline)."""
    parts = module.split(".")[1:]
    if not parts:
        return "edgeinfer"
    if parts[0] == "transports" and len(parts) > 1:
        return "transports." + parts[1]
    return parts[0]


def package_cycles(imports: list[Import]) -> list[list[str]]:
    """Every elementary cycle among the units (strongly connected components of more than one unit)."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        a, b = unit(imp.module), unit(imp.target)
        if a != b and b != "edgeinfer":
            graph.setdefault(a, set()).add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return components
