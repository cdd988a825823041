"""The package's floors, read from the source: no import cycle, and each folder imports only the floors below it.

Every `import` counts, the lazy ones inside functions too: a cycle hidden in a function body still ties two
modules together. The order, lowest first: the shared helpers; nas/arch (what a network is, counted and
built); nas/engine (training); the trial record and finished runs; nas/report; the search, retraining and
the API; the command line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

NAS = Path(__file__).resolve().parents[1] / "nas"
HELPERS = {"nas.errors", "nas.numbers", "nas.yamlfile", "nas.atomic", "nas.stopping", "nas.bundled", "nas.registry"}
# module prefix: the nas modules it may import besides itself and HELPERS
ALLOWED = {
    "nas.arch": ("nas.arch", "nas.engine.recipe"),  # space files' train: knobs and the init schemes are recipe fields
    "nas.engine": ("nas.arch", "nas.engine"),
    "nas.report": ("nas.arch", "nas.engine.recipe", "nas.record", "nas.runs", "nas.artifacts", "nas.report"),
    "nas.runs": ("nas.arch", "nas.engine", "nas.artifacts"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(NAS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The nas modules `path` imports, anywhere in it (`from nas.x import y` counts y when y is a module)."""
    out = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in out if m in MODULES}


MODULES = {module_name(p) for p in NAS.rglob("*.py")}
GRAPH = {module_name(p): imports(p) - {module_name(p)} for p in NAS.rglob("*.py")}


def cycle_from(start: str) -> list[str] | None:
    """A path of imports from `start` back to itself, if there is one."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in sorted(GRAPH[node]):
            if nxt == start:
                return path + [start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, path + [nxt]))
    return None


def test_no_module_imports_its_way_back_to_itself():
    cycles = {m: c for m in sorted(GRAPH) if m != "nas" and (c := cycle_from(m))}
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles.values())


@pytest.mark.parametrize("prefix", sorted(ALLOWED))
def test_each_floor_imports_only_the_floors_below_it(prefix):
    bad = {f"{m} -> {i}" for m, deps in GRAPH.items() if m == prefix or m.startswith(prefix + ".")
           for i in deps if i not in HELPERS and i != "nas" and not any(i == a or i.startswith(a + ".") for a in ALLOWED[prefix])}
    assert not bad, sorted(bad)


def test_the_report_reads_finished_runs_without_the_retraining_code():
    report = {i for m, deps in GRAPH.items() if m.startswith("nas.report") for i in deps}
    assert "nas.runs" in report and not report & {"nas.retrain", "nas.search", "nas.api", "nas.cli"}


def test_the_checker_sees_a_cycle_when_there_is_one(monkeypatch):
    monkeypatch.setitem(GRAPH, "nas.arch.ops", GRAPH["nas.arch.ops"] | {"nas.arch.layout"})
    path = cycle_from("nas.arch.ops")
    assert path[0] == path[-1] == "nas.arch.ops" and "nas.arch.layout" in path
    assert cycle_from("nas.arch.layout")  # the same cycle, from the other end
