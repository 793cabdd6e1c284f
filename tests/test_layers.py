"""The layers import one way, as Linux's do: nothing below the Worker reaches up into it.

Every import counts, also inside functions and under TYPE_CHECKING (a circle hidden there is still a
circle). The package graph must be acyclic, and the lower layers must never import the Worker
(datapath), replay, the CLI or the benchmarks.
"""

import ast
from collections import defaultdict
from pathlib import Path

import flowpath

ROOT = Path(flowpath.__file__).parent
LOWER = ("packet", "net", "netfilter", "xfrm", "flowtable", "inet", "ports", "config", "netns")
UPPER = ("datapath", "workers", "replay", "cli", "bench")


def _unit(module: str) -> str:
    """flowpath.inet.ip_output -> inet; flowpath.netns -> netns."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def import_graph(root: Path = ROOT) -> dict[str, dict[str, list[str]]]:
    """unit -> imported unit -> the files (with line) that import it; root: the flowpath package."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in root.rglob("*.py"):
        rel = path.relative_to(root.parent)
        unit = _unit(".".join(rel.with_suffix("").parts))
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name.startswith("flowpath.") and _unit(name) != unit:
                    graph[unit][_unit(name)].append(f"{rel}:{node.lineno}")
    return graph


def test_lower_layers_never_import_the_worker_replay_cli_or_bench():
    graph = import_graph()
    bad = [
        f"{unit} -> {up} ({', '.join(graph[unit][up])})"
        for unit in LOWER
        for up in UPPER
        if up in graph[unit]
    ]
    assert not bad, "\n".join(bad)


def test_package_graph_is_acyclic():
    graph = import_graph()
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(u: str) -> None:
        state[u] = 1
        path.append(u)
        for v, where in graph[u].items():
            if state.get(v) == 1:
                cycle = path[path.index(v) :] + [v]
                raise AssertionError(f"import circle {' -> '.join(cycle)} (last edge: {where[0]})")
            if v not in state:
                visit(v)
        path.pop()
        state[u] = 2

    for u in list(graph):
        if u not in state:
            visit(u)


def test_the_graph_sees_function_level_and_type_checking_imports(tmp_path):
    """The walker must not miss the hidden kinds of import this test exists to catch."""
    inet = tmp_path / "flowpath" / "inet"
    inet.mkdir(parents=True)
    (inet / "x.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from flowpath.datapath import Worker\n"
        "def f():\n    import flowpath.cli.main\n"
    )
    graph = import_graph(tmp_path / "flowpath")
    assert set(graph["inet"]) == {"datapath", "cli"}
