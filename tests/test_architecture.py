"""The shape of the code base: modules import each other without cycles, none grows past
700 lines, and one place walks a program's steps to execute them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
# the source folders and the package names they install as
PACKAGES = {
    "anacc": "anacc",
    "compiler": "anacc.compiler",
    "passes": "anacc.passes",
    "runtime": "anacc.runtime",
}
MAX_LINES = 700


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Project modules ``path`` imports, at module level or inside functions."""
    out = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def import_graph() -> nx.DiGraph:
    mods = modules()
    graph = nx.DiGraph()
    for name, path in mods.items():
        graph.add_node(name)
        for target in imports(path, name, set(mods)):
            # a package's __init__ importing its own submodules is not a cycle of concern
            if not target.startswith(name + "."):
                graph.add_edge(name, target)
    return graph


def test_no_import_cycle_between_modules() -> None:
    graph = import_graph()
    assert graph.number_of_edges() > 50  # the walk sees the imports
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, f"import cycles: {cycles[:5]}"


def test_compiler_and_passes_stay_off_the_runtime() -> None:
    graph = import_graph()
    for name in graph:
        if name.startswith(("anacc.compiler", "anacc.passes")):
            allowed = name in (
                "anacc.passes.finetune",
                "anacc.passes.finetune_sends",
                "anacc.passes.surrogate",
            )
            uses = {t for t in graph.successors(name) if t.startswith("anacc.runtime")}
            assert allowed or not uses, f"{name} imports {uses}"


def test_the_runtime_never_reads_onnx_models() -> None:
    """A program runs without the ONNX file: the runtime does not import the frontend."""
    graph = import_graph()
    for name in graph:
        if name.startswith("anacc.runtime"):
            assert "anacc.compiler.frontend" not in set(graph.successors(name)), name


def test_no_module_over_700_lines() -> None:
    long = {n: len(p.read_text().splitlines()) for n, p in modules().items()}
    assert not {n: c for n, c in long.items() if c > MAX_LINES}


def test_one_loop_walks_the_steps_to_execute_them() -> None:
    loops = []
    for name, path in modules().items():
        text = path.read_text()
        for match in re.finditer(r"for .* in .*\.steps\b.*:", text):
            body = text[match.end() : match.end() + 400]
            if "analog(" in body or ".digital(" in body:
                loops.append(name)
    assert loops == ["anacc.runtime.interpreter"]
