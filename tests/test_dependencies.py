"""The runtime dependencies in pyproject.toml match what the runtime packages import.

Every third-party top-level module imported by ``providers``, ``llmspell_kernel`` or
``llmspell_cli`` (at any depth: lazy imports inside functions count) is provided by a
distribution in ``[project] dependencies``; every distribution there is imported somewhere.
Import names are mapped to distributions with ``importlib.metadata.packages_distributions()``.
An import inside ``try: ... except ImportError`` is optional and needs no declaration.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections import defaultdict
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_PACKAGES = ("providers", "llmspell_kernel", "llmspell_cli")


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_runtime_dependencies() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = set()
    for requirement in project["dependencies"]:
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
        assert match, f"cannot read the name of {requirement!r}"
        names.add(normalize(match.group()))
    return names


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    caught = handler.type
    names = caught.elts if isinstance(caught, ast.Tuple) else [caught]
    return any(
        isinstance(name, ast.Name) and name.id in ("ImportError", "ModuleNotFoundError")
        for name in names
    )


def _optional_imports(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside a ``try`` that catches ImportError."""
    optional: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
            for statement in node.body:
                optional.update(
                    id(inner)
                    for inner in ast.walk(statement)
                    if isinstance(inner, ast.Import | ast.ImportFrom)
                )
    return optional


def top_level_imports(tree: ast.AST) -> set[str]:
    """The absolute, non-optional imports of a module, by top-level name."""
    optional = _optional_imports(tree)
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names


def third_party_imports() -> dict[str, set[str]]:
    """Third-party top-level import name -> the runtime files importing it."""
    found: dict[str, set[str]] = defaultdict(set)
    for package in RUNTIME_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for name in top_level_imports(tree):
                if name not in sys.stdlib_module_names and name not in RUNTIME_PACKAGES:
                    found[name].add(str(path.relative_to(ROOT)))
    return found


def test_every_third_party_import_is_a_declared_dependency() -> None:
    declared = declared_runtime_dependencies()
    providers = packages_distributions()
    undeclared = {}
    for name, files in sorted(third_party_imports().items()):
        distributions = {normalize(d) for d in providers.get(name, [])}
        if not distributions & declared:
            undeclared[name] = (sorted(distributions) or ["not installed"], sorted(files))
    assert undeclared == {}, "imported by runtime code but not in [project] dependencies"


def test_every_declared_dependency_is_imported() -> None:
    imported = set(third_party_imports())
    provided: dict[str, set[str]] = defaultdict(set)  # distribution -> its import names
    for name, distributions in packages_distributions().items():
        for distribution in distributions:
            provided[normalize(distribution)].add(name)
    unused = {
        distribution: sorted(provided[distribution]) or ["not installed"]
        for distribution in sorted(declared_runtime_dependencies())
        if not provided[distribution] & imported
    }
    assert unused == {}, "in [project] dependencies but not imported by runtime code"


def test_optional_and_lazy_imports_are_told_apart() -> None:
    tree = ast.parse(
        "import a.b\n"
        "from c.d import e\n"
        "from . import f\n"
        "def g():\n"
        "    import h\n"
        "try:\n"
        "    import optional\n"
        "except (ModuleNotFoundError, OSError):\n"
        "    pass\n"
        "try:\n"
        "    import required\n"
        "except ValueError:\n"
        "    pass\n"
    )
    assert top_level_imports(tree) == {"a", "c", "h", "required"}
