"""alumet_setup's folders are its layers, and imports go one way: cli.py -> the use cases (play.py, uptodate.py)
-> doctor/, playbook/, targets/ -> hostside/, with the common modules (exits, paths, plugin_needs, steps,
terminal, textsafe, threads, version) below all but hostside/, which is self-contained (the collection ships it
alone, and Ansible loads its modules beside their links). Imports inside functions count (kept there for
start-up time, they are coupling all the same), and no module is in an import cycle: cli.py <-> play.py (play
printed errors through cli) and hosts.py <-> inventory.py <-> batched_host.py were the last two."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "alumet_setup"


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.with_suffix("").relative_to(PACKAGE.parent).parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that `name` imports, anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in found if m in known and m != name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


COMMON = {"alumet_setup", "exits", "paths", "plugin_needs", "steps", "terminal", "textsafe", "threads", "version"}
# What each layer may import, besides itself (a layer is a folder; the top-level modules are named).
ALLOWED = {
    "common": set(),
    "hostside": set(),
    "targets": {"hostside", "common"},
    "doctor": {"targets", "hostside", "common"},
    "playbook": {"targets", "hostside", "common"},
    "use cases": {"doctor", "playbook", "targets", "hostside", "common"},
    "cli": {"use cases", "doctor", "playbook", "targets", "hostside", "common"},
}


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 2:
        return parts[1]
    name = parts[-1]
    if name in COMMON:
        return "common"
    if name in ("play", "uptodate"):
        return "use cases"
    if name in ("cli", "__main__"):
        return "cli"
    return name  # a layer's own package: alumet_setup.doctor is doctor/__init__.py


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def test_the_package_has_no_import_cycle() -> None:
    edges = graph()
    assert "alumet_setup.targets.hosts" in edges["alumet_setup.targets.connection"]  # the scan sees imports
    assert "alumet_setup.threads" in edges["alumet_setup.targets.ssh"]  # ... inside functions too
    assert cycles(edges) == []


def test_every_import_goes_down_the_layers() -> None:
    assert {layer(m) for m in graph()} == set(ALLOWED), "a module outside the layers: place it, and say so here"
    wrong = sorted(f"{m} ({layer(m)}) imports {d} ({layer(d)})" for m, deps in graph().items() for d in deps
                   if layer(d) != layer(m) and layer(d) not in ALLOWED[layer(m)])
    assert wrong == []


def test_a_cycle_is_found_where_there_is_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
