"""Imports point down the floors of the house: `kernel` at the bottom, then the domains in the
order they build on each other (lottery, wallet_adapter, merchants), the sandbox beside them as
the outside parties that speak their protocols, and `stimulus`, which assembles everything, on
top. A package may import only the floors below its own.

So the kernel imports no domain and not the assembly, no domain imports the assembly, and no
product package imports the sandbox (production runs without it). The imports are read from the
source with `ast`, those inside functions and under TYPE_CHECKING included, and so are
`importlib.import_module("...")` and `find_spec("...")` with a literal name: an import hidden in a
function body breaks a floor as surely as one at the top of a module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FLOORS = ("kernel", "lottery", "wallet_adapter", "merchants", "sandbox", "stimulus")
DYNAMIC_IMPORTS = {"import_module", "find_spec", "__import__"}


def imported_modules(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, module) for every absolute import in a module, static or by a literal name."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in DYNAMIC_IMPORTS:
                yield node.lineno, node.args[0].value


def offences(root: Path, package: str) -> list[str]:
    """Each import in `package` of a floor at or above its own (itself excepted), named."""
    above = set(FLOORS[FLOORS.index(package) + 1:])
    found = []
    for path in sorted((root / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for line, module in sorted(imported_modules(tree)):
            if module.split(".")[0] in above:
                found.append(f"{path.relative_to(root)}:{line} imports {module}")
    return found


@pytest.mark.parametrize("package", FLOORS)
def test_imports_point_down(package: str) -> None:
    assert (ROOT / package / "__init__.py").is_file(), f"{package} is not a package here"
    assert offences(ROOT, package) == []


def test_every_kind_of_import_upward_is_named(tmp_path: Path) -> None:
    (tmp_path / "kernel").mkdir()
    (tmp_path / "kernel" / "ground.py").write_text(
        "import importlib\n"
        "from typing import TYPE_CHECKING\n"
        "import kernel.errors\n"
        "from lottery import campaigns\n"
        "if TYPE_CHECKING:\n"
        "    from stimulus.app import create_app\n"
        "def lazily():\n"
        "    import wallet_adapter.issuance\n"
        "    return importlib.import_module('merchants.api')\n")
    (tmp_path / "merchants").mkdir()
    (tmp_path / "merchants" / "shop.py").write_text(
        "from lottery import campaigns\nfrom kernel import ledger\nfrom sandbox import bank\n")
    assert offences(tmp_path, "kernel") == [
        "kernel/ground.py:4 imports lottery",
        "kernel/ground.py:6 imports stimulus.app",
        "kernel/ground.py:8 imports wallet_adapter.issuance",
        "kernel/ground.py:9 imports merchants.api",
    ]
    assert offences(tmp_path, "merchants") == ["merchants/shop.py:3 imports sandbox"]
