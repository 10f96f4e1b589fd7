"""The import rule of docs/architecture.md, checked on every module's syntax tree:
``training -> artifacts -> models`` and ``service -> artifacts -> models``; training and the
service never import each other, and models and artifacts import neither."""

import ast
from pathlib import Path

import pytest
from support import REPO

ROOT = REPO
PACKAGES = ("models", "artifacts", "training", "service")
FORBIDDEN = {
    "models": {"artifacts", "training", "service"},
    "artifacts": {"training", "service"},
    "training": {"service"},
    "service": {"training"},
}


# Inside the service: the routes call into inference, never the other way round.
FORBIDDEN_MODULES = {"service/inference": ("service.api",), "service/workers": ("service.api",)}


def imported_modules(path: Path) -> set[tuple[str, int]]:
    """The modules a module imports, anywhere in it (functions included), with lines."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.update((f"{node.module}.{alias.name}", node.lineno) for alias in node.names)
    return found


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """The project packages a module imports, anywhere in it (functions included), with lines."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update((name.split(".")[0], node.lineno) for name in names)
    return found


def forbidden_imports(package: str) -> list[str]:
    return [f"{path.relative_to(ROOT)}:{line} imports {imported}"
            for path in sorted((ROOT / package).rglob("*.py"))
            for imported, line in sorted(imported_packages(path))
            if imported in FORBIDDEN[package]]


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_what_the_architecture_allows(package):
    assert forbidden_imports(package) == []


def test_the_checker_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from training.cli import main\n    import service.app\n")
    assert imported_packages(module) == {("training", 2), ("service", 3)}


@pytest.mark.parametrize("folder", FORBIDDEN_MODULES)
def test_inference_and_workers_never_import_the_routes(folder):
    found = [f"{path.relative_to(ROOT)}:{line} imports {name}"
             for path in sorted((ROOT / folder).rglob("*.py"))
             for name, line in sorted(imported_modules(path))
             if name.startswith(FORBIDDEN_MODULES[folder])]
    assert found == []
