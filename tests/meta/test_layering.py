"""Dependencies point one way: server -> scoring, router -> scoring; scoring has no web imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN: dict[str, tuple[str, ...]] = {
    "scoring": ("server", "router", "starlette", "uvicorn", "httpx", "aiohttp"),
    "server": ("router",),
    "router": ("server",),
}
# The command-line front door dispatches to both packages, lazily.
EXEMPT = {Path("server/cli.py")}


def _imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_point_one_way(package: str) -> None:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel in EXEMPT:
            continue
        for module, line in _imports(path):
            top = module.split(".")[0]
            if top in FORBIDDEN[package]:
                bad.append(f"{rel}:{line} imports {module}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("package", ["server", "router"])
def test_no_private_names_of_scoring(package: str) -> None:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("scoring"):
                if any(part.startswith("_") for part in node.module.split(".")):
                    bad.append(f"{path.relative_to(ROOT)} imports {node.module}")
                bad += [
                    f"{path.relative_to(ROOT)} imports scoring name {a.name}"
                    for a in node.names
                    if a.name.startswith("_")
                ]
    assert not bad, "\n".join(bad)
