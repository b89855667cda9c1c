"""The layers import only downward: nothing above ``db`` writes SQL or reaches the database
around ``core`` (``models -> db -> core -> runner -> web/cli``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import stask

PACKAGE = Path(stask.__file__).resolve().parent
# Layer -> the modules it must not import (a prefix names the package and all its modules).
FORBIDDEN = {
    "stask.models": ("stask.db", "stask.core", "stask.runner", "stask.cli", "stask.web"),
    "stask.core": ("sqlalchemy", "stask.runner", "stask.cli", "stask.web"),
    "stask.runner": ("sqlalchemy", "stask.db", "stask.cli", "stask.web"),
    "stask.cli": ("sqlalchemy", "stask.db"),
    "stask.web": ("sqlalchemy", "stask.db", "stask.cli"),
}


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST, module: str) -> set[str]:
    """Every module ``tree`` imports, type-only imports included, relative ones resolved."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: -node.level]
                base = ".".join([*parent, base] if base else parent)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def banned_for(module: str) -> tuple[str, ...]:
    """What ``module`` must not import: its layer's list; SQLAlchemy anywhere outside db."""
    layer = next((name for name in FORBIDDEN if (module + ".").startswith(name + ".")), None)
    banned = FORBIDDEN[layer] if layer is not None else ()
    return banned if (module + ".").startswith("stask.db.") else (*banned, "sqlalchemy")


def violations(package: Path) -> list[str]:
    """``module imports name`` for every forbidden import in ``package`` (a ``stask`` folder)."""
    found = []
    for path in sorted(package.rglob("*.py")):
        module = module_name(path, package)
        banned = banned_for(module)
        for name in sorted(imported(ast.parse(path.read_text(), str(path)), module)):
            if any(name == prefix or name.startswith(prefix + ".") for prefix in banned):
                found.append(f"{module} imports {name}")
    return found


def test_every_layer_imports_only_the_layers_below_it() -> None:
    assert violations(PACKAGE) == []


def test_the_walk_reads_every_layer() -> None:
    modules = {module_name(path, PACKAGE) for path in PACKAGE.rglob("*.py")}
    for layer in ("stask.models", "stask.core.facade", "stask.runner.daemon", "stask.cli.tasks"):
        assert layer in modules


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("stask/runner/bad.py", "from stask.db.store import Store\n", "stask.db.store"),
        ("stask/runner/bad.py", "import sqlalchemy\n", "sqlalchemy"),
        ("stask/cli/bad.py", "from ..db import tables\n", "stask.db"),
        ("stask/core/bad.py", "from sqlalchemy import select\n", "sqlalchemy"),
        (
            "stask/core/bad.py",
            "if TYPE_CHECKING:\n    from sqlalchemy import Connection\n",
            "sqlalchemy",
        ),
        ("stask/web/routes/bad.py", "from stask.db.nodes import NodeStore\n", "stask.db.nodes"),
        ("stask/models.py", "from stask.db.rows import task_from_row\n", "stask.db.rows"),
        ("stask/settings.py", "from sqlalchemy.engine import URL\n", "sqlalchemy.engine"),
    ],
)
def test_a_forbidden_import_is_found(
    tmp_path: Path, module: str, source: str, expected: str
) -> None:
    path = tmp_path / module
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    found = violations(tmp_path / "stask")
    assert any(line.endswith(f"imports {expected}") for line in found), found


def test_core_may_import_db(tmp_path: Path) -> None:
    path = tmp_path / "stask" / "core" / "fine.py"
    path.parent.mkdir(parents=True)
    path.write_text("from stask.db.store import Store\nfrom stask.models import Task\n")
    assert violations(tmp_path / "stask") == []
