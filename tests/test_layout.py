"""The package layout is the pipeline: imports run one way and never in a circle.

experiments → launch → run → rows → results. Every ``import`` statement of ``harness/`` (module level and
inside functions alike) is read with ``ast``; an edge goes to the module named (or to the submodule a
``from package import name`` names).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "harness"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_no_import_circle_anywhere_in_the_package():
    assert cycles(import_graph()) == []


def test_a_circle_would_be_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def edges_into(graph, source_prefix: str, target_prefixes: tuple[str, ...]) -> list[tuple[str, str]]:
    return sorted((src, dst) for src, dsts in graph.items() if src.startswith(source_prefix)
                  for dst in dsts if dst.startswith(target_prefixes))


def test_results_read_rows_only_never_the_launch_or_the_run():
    assert edges_into(import_graph(), "harness.results", ("harness.launch", "harness.run")) == []


def test_a_run_knows_nothing_of_where_it_was_launched_or_of_the_tables():
    assert edges_into(import_graph(), "harness.run", ("harness.launch", "harness.results", "harness.commands")) == []


def test_the_launch_never_reads_tables_and_the_spec_never_reads_what_comes_after_it():
    graph = import_graph()
    assert edges_into(graph, "harness.launch", ("harness.results", "harness.commands")) == []
    assert edges_into(graph, "harness.experiments", ("harness.launch", "harness.run", "harness.results")) == []


def test_library_packages_never_import_the_command_line():
    graph = import_graph()
    libraries = [m for m in graph if not m.startswith(("harness.commands", "harness.cli", "harness.__main__"))]
    assert [(m, d) for m in libraries for d in graph[m] if d.startswith(("harness.cli", "harness.commands"))] == []
