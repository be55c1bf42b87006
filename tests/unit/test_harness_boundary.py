"""The simulation harness is a guest: no product module imports gatewayd.sim or amqtt.

A static walk of the import statements (AST) of every module under gatewayd/ outside
gatewayd/sim/, relative imports resolved, so an import hidden in a function or behind
TYPE_CHECKING counts too. The one seam, gatewayd.harness, names the harness only as a
string it hands to importlib.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

from gatewayd.harness import HARNESS_CLI
from gatewayd.sim.cli import SIM_REQUIREMENTS

PACKAGE = Path(__file__).resolve().parents[2] / "gatewayd"
HARNESS = PACKAGE / "sim"
#: Distributions (top-level modules) only the harness may use.
HARNESS_ONLY = ("amqtt", "typer", "rich", "pygments")


def module_name(path: Path) -> str:
    """'gatewayd.x.y' for gatewayd/x/y.py (a package's __init__ is the package)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) for every import statement in the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return names_imported_by(path.read_text(encoding="utf-8"), package)


def names_imported_by(source: str, package: str) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) per import in `source`, a module of `package`."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            for alias in node.names:  # `from gatewayd import sim` imports gatewayd.sim
                yield node.lineno, f"{base}.{alias.name}"


def strings_in(source: str) -> Iterator[str]:
    """Every string literal of `source` that is not a docstring or a comment-like statement."""
    tree = ast.parse(source)
    prose = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose:
            yield node.value


def product_modules() -> list[Path]:
    """Every .py file of the package outside the harness."""
    return sorted(p for p in PACKAGE.rglob("*.py") if HARNESS not in p.parents)


def is_under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_walk_sees_the_whole_product() -> None:
    """The walk covers the product (not an empty list) and resolves relative imports."""
    modules = product_modules()
    assert len(modules) > 80
    assert PACKAGE / "harness.py" in modules
    assert not [p for p in modules if "sim" in p.relative_to(PACKAGE).parts]
    names = {name for path in modules for _, name in imported_names(path)}
    assert {"gatewayd.config.loader", "structlog", "pydantic"} <= names


def test_no_product_module_imports_the_harness_or_its_dependencies() -> None:
    """No import statement outside gatewayd/sim/ names gatewayd.sim, amqtt, typer or rich."""
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {name}"
        for path in product_modules()
        for line, name in imported_names(path)
        if any(is_under(name, banned) for banned in ("gatewayd.sim", *HARNESS_ONLY))
    ]
    assert offenders == []


def test_only_the_seam_names_the_harness() -> None:
    """'gatewayd.sim' is a string only in gatewayd/harness.py (importlib's target)."""
    naming = {
        str(path.relative_to(PACKAGE.parent))
        for path in product_modules()
        if any("gatewayd.sim" in text for text in strings_in(path.read_text(encoding="utf-8")))
    }
    assert naming == {"gatewayd/harness.py"}
    assert is_under(HARNESS_CLI, "gatewayd.sim")


def test_the_walk_catches_a_hidden_relative_import() -> None:
    """An import of the harness inside a function, written relative, is found."""
    source = "def f() -> None:\n    from ..sim import device\n    from . import sim\n"
    found = set(names_imported_by(source, "gatewayd.uplink"))
    assert (2, "gatewayd.sim.device") in found
    assert (3, "gatewayd.uplink.sim") in found
    assert not any(is_under(name, "gatewayd.sim") for _, name in names_imported_by(
        "from .simulate import x\n", "gatewayd"))  # fmt: skip


def test_the_harness_check_names_the_sim_extra() -> None:
    """SIM_REQUIREMENTS (checked before demo/emulate run) are the pyproject `sim` extra's."""
    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]
    extra = [req.split("=")[0].split("<")[0].split(">")[0] for req in
             project["optional-dependencies"]["sim"]]  # fmt: skip
    assert sorted(extra) == sorted(SIM_REQUIREMENTS)
    assert not [r for r in project["dependencies"] if r.lower().startswith(HARNESS_ONLY)]
