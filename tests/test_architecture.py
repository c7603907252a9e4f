"""The house's layers, checked by walking every import (module level and inside functions).

    base      errors, metadata, preprocess, labels, ...   what every artifact and image needs
    model     config, models, weights, compress            the SqueezeNet family and its weights (torch)
    runtimes  edge_squeeze.runtimes.*                      run a model file; the deploy side
    export    edge_squeeze.export.*                        make model files; the workstation side
    app       classifier, cli, bench, camera, ...          what users call (and the package's
                                                           ``edge_squeeze.Classifier``)

A module may import its own layer and the layers above it in this list, never one below: so
``runtimes`` stands alone (it never imports ``export``), and nothing imports back up into a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, Set, Tuple

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {
    "edge_squeeze": REPO / "edge_squeeze",
    "edge_squeeze.export": REPO / "export",
    "edge_squeeze.runtimes": REPO / "runtimes",
}
LAYERS = ("base", "model", "runtimes", "export", "app")
BASE = {
    "_version",
    "errors",
    "labels",
    "preprocess",
    "metadata",
    "fileio",
    "environment",
    "progress",
    "evaluate",
    "options",
    "formats",
    "results",
}
MODEL = {"config", "models", "weights", "compress", "onnx_graph"}


def modules() -> Dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts))
            found[name[: -len(".__init__")] if name.endswith(".__init__") else name] = path
    return found


def layer(module: str) -> str:
    if module.startswith("edge_squeeze.runtimes"):
        return "runtimes"
    if module.startswith("edge_squeeze.export"):
        return "export"
    first = module.split(".")[1] if "." in module else ""
    if first in BASE:
        return "base"
    return "model" if first in MODEL else "app"


def imports(module: str, path: Path, known: Set[str]) -> Iterator[Tuple[str, bool]]:
    """(imported project module, at import time?) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module:
                yield target, id(node) in top_level or _guarded_top_level(tree, node)


def _guarded_top_level(tree: ast.Module, node: ast.AST) -> bool:
    """Imports inside a module-level ``try``/``if`` run at import time too."""
    return any(
        isinstance(stmt, (ast.Try, ast.If)) and any(child is node for child in ast.walk(stmt))
        for stmt in tree.body
    )


def graph() -> Dict[str, Set[Tuple[str, bool]]]:
    found = modules()
    return {name: set(imports(name, path, set(found))) for name, path in found.items()}


def test_every_import_points_up_the_layers():
    wrong = [
        f"{src} ({layer(src)}) imports {dst} ({layer(dst)})"
        for src, targets in graph().items()
        for dst, _ in targets
        if LAYERS.index(layer(dst)) > LAYERS.index(layer(src))
    ]
    assert not wrong, "\n".join(sorted(wrong))


def test_runtimes_never_import_export():
    bad = [
        (s, d)
        for s, targets in graph().items()
        for d, _ in targets
        if s.startswith("edge_squeeze.runtimes") and d.startswith("edge_squeeze.export")
    ]
    assert not bad


def _cycles(eager_only: bool) -> list:
    edges = {
        src: {dst for dst, eager in targets if eager or not eager_only} for src, targets in graph().items()
    }
    state: Dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list) -> None:
        state[node] = 1
        for nxt in edges.get(node, ()):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    return cycles


def test_no_import_time_cycle():
    assert not _cycles(eager_only=True)


def test_no_cycle_even_through_imports_inside_functions():
    """A module imported lazily must not import its importer back (models <-> weights did)."""
    assert not _cycles(eager_only=False)


def test_the_walker_sees_a_wrong_import():
    """The checks above can fail: an export import inside a runtimes function is found."""
    source = "def f():\n    from edge_squeeze.export.tensorrt_build import build_engine\n"
    path = REPO / "build" / "probe_runtimes_module.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(source)
    try:
        found = set(imports("edge_squeeze.runtimes.probe", path, set(modules())))
    finally:
        path.unlink()
    assert ("edge_squeeze.export.tensorrt_build", False) in found
    assert layer("edge_squeeze.export.tensorrt_build") == "export"
