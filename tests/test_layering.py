"""The one-way flow of ARCHITECTURE.md, checked on the source: ``tasks/`` and ``policies/`` never
import ``harness/`` (suites with their own model loop get a cache factory from the runner), and
``policies/`` never imports ``tasks/``."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def imported_packages(path: Path) -> set[str]:
    """Top-level package names of every import in ``path`` (module level and inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_imported_packages_sees_nested_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import os\ndef f():\n    from harness.cache import EvictionCache\n    import tasks.base\n")
    assert imported_packages(src) == {"os", "harness", "tasks"}


@pytest.mark.parametrize("room,forbidden", [("tasks", {"harness"}), ("policies", {"harness", "tasks"})])
def test_lower_rooms_do_not_import_upper_ones(room, forbidden):
    offenders = {str(p.relative_to(ROOT)): sorted(imported_packages(p) & forbidden)
                 for p in sorted((ROOT / room).rglob("*.py"))}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"{room}/ must not import {sorted(forbidden)}: {offenders}"
