"""The project's modules form layers that point one way, and no two modules import each other.

Every import counts, at the top of a module or inside a function: a cycle through a late import
is still a cycle. The layers, lowest first:

    agent/       on the host: the standard library, jinja2, dnspython; nothing else of ours
    localcloud/  this machine's daemons and containers, no Pulumi; may use the host contract
    components/  the Pulumi program; of the agent only the contract (spec.py, contract.py)
    ops/, policies/, __main__.py   use the components' registry and the agent's checks
"""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("agent", "localcloud", "components", "ops", "policies")
# What each layer may import of the project's own packages ("*": a whole package).
ALLOWED = {
    "agent": {"agent.*"},
    "localcloud": {"localcloud.*", "agent.contract"},
    "components": {"components.*", "localcloud.*", "agent.spec", "agent.contract"},
    "ops": {"ops.*", "components.*", "localcloud.*", "agent.contract", "agent.verdict", "agent.checks_dns"},
    "policies": {"policies.*", "components.*", "agent.contract"},
}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: pathlib.Path) -> set[str]:
    """The project modules `name` imports (anywhere in the file)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # `from pkg import mod` imports pkg.mod when that is a module of ours
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in MODULES and t != name}
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _allowed(importer: str, imported: str) -> bool:
    layer = importer.split(".")[0]
    for rule in ALLOWED[layer]:
        if rule.endswith(".*") and (imported == rule[:-2] or imported.startswith(rule[:-1])):
            return True
        if imported == rule:
            return True
    return False


@pytest.mark.parametrize("importer", sorted(GRAPH))
def test_a_module_imports_only_from_its_own_layer_or_below(importer):
    wrong = sorted(m for m in GRAPH[importer] if not _allowed(importer, m))
    assert not wrong, f"{importer} imports {wrong}, above its layer (see this file's docstring)"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_two_modules_import_each_other():
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_graph_sees_late_imports_inside_functions():
    # mail_server builds the host backend it is given; the registry imports it only by name
    assert "components.backends" in GRAPH["components.mail_server"]
    assert "components.local_cloud" in GRAPH["components.hosts.local"]
