"""The package's import graph: acyclic, and layered as docs/ARCHITECTURE.md says.

Every ``import ticlip.x`` / ``from ticlip.x import y`` counts, at module level or inside a function
(a function-level import still ties the two modules together). Edges go to the module named; an
import of a package's name from ``ticlip.pkg`` counts as an edge to ``ticlip.pkg`` (its __init__).
"""

from __future__ import annotations

import ast
import os

import pytest

import ticlip

SRC = os.path.dirname(ticlip.__file__)


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, os.path.dirname(SRC))[: -len(".py")].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _modules() -> dict[str, str]:
    out = {}
    for root, _, files in os.walk(SRC):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(root, f)
                out[_module_name(path)] = path
    return out


def _resolve(name: str, modules: dict[str, str]) -> str | None:
    """The ticlip module ``name`` refers to (a submodule, or the nearest package/module above)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        is_pkg = path.endswith("__init__.py")
        tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = mod.split(".")
                    parts = parts if is_pkg else parts[:-1]
                    parts = parts[: len(parts) - (node.level - 1)]
                    base = ".".join(parts + ([base] if base else []))
                # `from ticlip.pkg import sub` may name a submodule
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for t in targets:
                if t == "ticlip" or t.startswith("ticlip."):
                    target = _resolve(t, modules)
                    if target and target != mod:
                        graph[mod].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = {m: WHITE for m in graph}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        colour[m] = GREY
        stack.append(m)
        for n in sorted(graph[m]):
            if colour[n] == GREY:
                return stack[stack.index(n):] + [n]
            if colour[n] == WHITE:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        colour[m] = BLACK
        return None

    for m in sorted(graph):
        if colour[m] == WHITE:
            found = visit(m)
            if found:
                return found
    return None


def _package_edges(graph, package: str):
    return {(m, t) for m, ts in graph.items() if m == package or m.startswith(package + ".") for t in ts}


def test_the_checker_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_function_level_imports():
    graph = import_graph()
    # ticlip.cli imports its command modules by name at run time; experiment imports the trainer lazily
    assert "ticlip.errors" in graph["ticlip.cli"]
    assert "ticlip.train.run" in graph["ticlip.experiment"]


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# What each part of the package may import (docs/ARCHITECTURE.md, "Who imports whom"). Keys and values
# are top-level modules or subpackages of ticlip; imports inside one part are always allowed.
BASE = {"ticlip.errors", "ticlip.atomic", "ticlip.schema", "ticlip.locking"}
ALLOWED = {
    "ticlip": set(),
    "ticlip.errors": set(),
    "ticlip.atomic": {"ticlip.errors"},
    "ticlip.locking": {"ticlip.errors"},
    "ticlip.schema": {"ticlip.errors", "ticlip.atomic"},
    "ticlip.models": {"ticlip.errors", "ticlip.atomic", "ticlip.hub"},
    "ticlip.hub": {"ticlip.errors"},
    "ticlip.run_layout": {"ticlip.errors", "ticlip.atomic"},
    "ticlip.progress": {"ticlip.errors", "ticlip.run_layout"},
    "ticlip.loggers": {"ticlip.errors"},
    "ticlip.config": BASE,
    "ticlip.data": BASE | {"ticlip.models"},  # the build's CLIP-score filter scores with a checkpoint
    "ticlip.methods": BASE | {"ticlip.models"},
    "ticlip.eval": BASE | {"ticlip.data", "ticlip.models", "ticlip.run_layout", "ticlip.progress", "ticlip.loggers"},
    "ticlip.report": BASE | {"ticlip.eval", "ticlip.run_layout", "ticlip.analysis", "ticlip.data"},
    "ticlip.train": BASE | {"ticlip.config", "ticlip.data", "ticlip.methods", "ticlip.eval", "ticlip.models",
                            "ticlip.run_layout", "ticlip.cli", "ticlip.loggers"},
    "ticlip.experiment": BASE | {"ticlip.config", "ticlip.data", "ticlip.methods", "ticlip.eval", "ticlip.models",
                                 "ticlip.run_layout", "ticlip.train", "ticlip.report", "ticlip.progress",
                                 "ticlip.pretrained"},  # an experiment makes its pretrained start (start:)
    "ticlip.experiment_cli": BASE | {"ticlip.experiment", "ticlip.report", "ticlip.run_layout"},
    "ticlip.pretrained": BASE | {"ticlip.models", "ticlip.data"},
    "ticlip.pretrained_cli": BASE | {"ticlip.pretrained"},
    "ticlip.analysis": BASE | {"ticlip.data", "ticlip.eval", "ticlip.models", "ticlip.run_layout"},
    "ticlip.cli": {"ticlip", "ticlip.errors"},
}


def _part(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def test_every_part_imports_only_what_the_architecture_allows():
    graph = import_graph()
    unknown = sorted({_part(m) for m in graph} - set(ALLOWED))
    assert not unknown, f"new parts of the package: add them to ALLOWED and docs/ARCHITECTURE.md: {unknown}"
    bad = sorted((m, t) for m, ts in graph.items() for t in ts
                 if _part(t) != _part(m) and _part(t) not in ALLOWED[_part(m)])
    assert not bad, f"imports the architecture does not allow: {bad}"


def test_methods_do_not_import_the_trainer():
    graph = import_graph()
    bad = [(m, t) for m, ts in graph.items() if _part(m) == "ticlip.methods" for t in ts
           if _part(t) in ("ticlip.train", "ticlip.eval")]
    assert not bad, bad
