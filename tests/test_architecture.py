"""The dependency direction of shared/ARCHITECTURE.md, enforced on every import statement."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"edge", "ledger", "market", "meters"}

# package -> top-level modules it must never import
FORBIDDEN = {
    "market": OURS - {"market"}
    | {"asyncio", "time", "random", "lmdb", "aiomqtt", "paho", "socket", "os"},
    "meters": {"ledger", "market", "edge", "aiomqtt", "paho", "lmdb"},
    "ledger": {"edge", "meters"},
}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_keeps_its_dependency_direction(package: str) -> None:
    """No module of a package imports what the architecture forbids it."""
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = imported_roots(path) & FORBIDDEN[package]
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert offenders == []


def test_nothing_imports_edge() -> None:
    """edge/ is the wiring place: no other package reaches into it."""
    offenders = [
        str(path.relative_to(ROOT))
        for package in OURS - {"edge"}
        for path in (ROOT / package).rglob("*.py")
        if "edge" in imported_roots(path)
    ]
    assert offenders == []


def test_every_package_states_what_it_owns() -> None:
    """Each package's __init__ docstring says what it owns and what it may import."""
    for package in sorted(OURS):
        doc = ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text())) or ""
        assert "Owns" in doc, package
        assert "import" in doc, package
