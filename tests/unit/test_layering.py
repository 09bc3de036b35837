"""The dependency direction between the package's layers (DESIGN.md §2), checked on the
source: framework/ imports none of modules/, optimizers/, targets/, cli/; targets/ never
imports optimizers/; modules/ imports neither optimizers/ nor targets/."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# folder -> the import name of its package
PACKAGES = {
    "framework": "lmforge",
    "modules": "lmforge.modules",
    "optimizers": "lmforge.optimizers",
    "targets": "lmforge.targets",
    "cli": "lmforge.cli",
    "compat": "lmforge.compat",
}
FORBIDDEN = {
    "framework": (
        "lmforge.modules",
        "lmforge.optimizers",
        "lmforge.targets",
        "lmforge.cli",
        "lmforge.compat",
    ),
    "compat": ("lmforge.optimizers", "lmforge.targets", "lmforge.cli"),
    "targets": ("lmforge.optimizers", "lmforge.cli"),
    "modules": ("lmforge.optimizers", "lmforge.targets", "lmforge.cli"),
}


def _module_name(folder: str, path: Path, root: Path) -> str:
    parts = list(path.relative_to(root / folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGES[folder], *parts])


def imported_names(folder: str, path: Path, root: Path = ROOT) -> Iterator[tuple[int, str]]:
    """Every absolute module name ``path`` imports (relative imports resolved), lazily
    imported ones inside functions included."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module = _module_name(folder, path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level > 1:
                    base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:  # `from lmforge import modules` imports a package too
                yield node.lineno, f"{target}.{alias.name}"
        elif isinstance(node, ast.Call) and _is_dynamic_import(node):
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                yield node.lineno, arg.value


def _is_dynamic_import(node: ast.Call) -> bool:
    func = node.func
    name = (
        func.attr
        if isinstance(func, ast.Attribute)
        else func.id
        if isinstance(func, ast.Name)
        else ""
    )
    return name in {"import_module", "__import__"} and bool(node.args)


def _is_under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violations(folder: str, root: Path = ROOT) -> list[str]:
    found: list[tuple[str, int, str]] = []
    for path in sorted((root / folder).rglob("*.py")):
        for line, name in imported_names(folder, path, root):
            if any(_is_under(name, banned) for banned in FORBIDDEN[folder]):
                found.append((str(path.relative_to(root)), line, name))
    return [f"{path}:{line} imports {name}" for path, line, name in sorted(found)]


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_layer_imports_only_allowed_layers(folder: str) -> None:
    if not (ROOT / folder).is_dir():
        pytest.skip(f"{folder}/ does not exist yet")
    assert violations(folder) == []


def test_generic_top_level_names_are_never_imported() -> None:
    generic = ("framework", "modules", "optimizers", "targets", "cli")
    found = []
    for folder in PACKAGES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for line, name in imported_names(folder, path):
                if name.split(".")[0] in generic:
                    found.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert found == []


def test_checker_catches_absolute_relative_and_dynamic_imports(tmp_path: Path) -> None:
    fake_root = tmp_path
    (fake_root / "framework" / "lm").mkdir(parents=True)
    (fake_root / "framework" / "__init__.py").write_text("")
    (fake_root / "framework" / "ok.py").write_text(
        "from .errors import UsageError\nimport lmforge.lm\n"
    )
    (fake_root / "framework" / "lm" / "bad.py").write_text(
        "from ..modules import ChainOfThought\n"
        "def f():\n    from lmforge.optimizers import MIPRO\n"
        "    import importlib\n    importlib.import_module('lmforge.targets.server')\n"
        "from lmforge import cli\n"
    )
    found = violations("framework", fake_root)
    assert found == [
        "framework/lm/bad.py:1 imports lmforge.modules",
        "framework/lm/bad.py:1 imports lmforge.modules.ChainOfThought",
        "framework/lm/bad.py:3 imports lmforge.optimizers",
        "framework/lm/bad.py:3 imports lmforge.optimizers.MIPRO",
        "framework/lm/bad.py:5 imports lmforge.targets.server",
        "framework/lm/bad.py:6 imports lmforge.cli",
    ]
