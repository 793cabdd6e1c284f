"""pyproject.toml's runtime dependencies are the third-party packages the flowpath package imports:
none unused (an install pulls in nothing it never runs), none missing (a fresh install works)."""

import ast
import sys
import tomllib
from pathlib import Path

import flowpath

ROOT = Path(flowpath.__file__).parent
PYPROJECT = ROOT.parent / "pyproject.toml"
IMPORT_NAME = {}  # distribution -> import name, where they differ (none today)
# imported directly but installed by a declared dependency, which pins a compatible version
VIA = {"llvmlite": "numba", "click": "typer"}  # click: the fallback of typers that do not vendor it


def _declared() -> set[str]:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    names = {
        d.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower() for d in deps
    }
    return {IMPORT_NAME.get(n, n) for n in names}


def _imported() -> set[str]:
    """Top-level names of every absolute import in the package (inside functions too)."""
    out = set()
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                out.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                out.update(a.name.split(".")[0] for a in node.names)
    return out


def test_every_declared_dependency_is_imported():
    assert _declared() - _imported() == set()


def test_every_third_party_import_is_declared():
    declared = _declared()
    third_party = _imported() - set(sys.stdlib_module_names) - {"flowpath", "_blake2"}
    assert {m for m in third_party - declared if VIA.get(m) not in declared} == set()
