"""The pure cores import only the standard library, and none of its I/O (static AST walk).

Each core's imports are followed through every gatewayd module they reach (and the
package `__init__` files Python runs on the way); an import of a third-party module or of
an I/O module of the standard library (`FORBIDDEN`) fails, naming the chain that led to it.
Imports under `if TYPE_CHECKING:` never run and are skipped; imports inside functions run
when called and count.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: The sans-IO cores: values in, values out; time and randomness come from the caller.
CORES = (
    "gatewayd.modbus.codec",  # register codec
    "gatewayd.modbus.planner",  # read planner
    "gatewayd.mapping.blockdecode",  # block decoder
    "gatewayd.mapping.decoding",  # raw responses → values (the stage's decoder cache)
    "gatewayd.modbus.points",  # the frozen point specs compiled from the config
    "gatewayd.modbus.addressruns",  # the planner's answered registers
    "gatewayd.backoff",  # the one backoff policy
    "gatewayd.modbus.backoff",  # device and bus backoff settings
    "gatewayd.modbus.probebudget",  # bus time share of dead-device probes
    "gatewayd.mapping.events",  # event rules
    "gatewayd.mapping.mapper",  # values → samples with quality
    "gatewayd.mapping.muting",  # which devices are muted
    "gatewayd.mapping.report",  # report by exception (deadband, heartbeat)
    "gatewayd.mapping.capture",  # capture rules: ring, capture lifecycle, CSV rows
    "gatewayd.enos.messages",  # EnOS codec
    "gatewayd.enos.topics",
    "gatewayd.enos.sign",
    "gatewayd.enos.reconnect",  # reconnect policy
    "gatewayd.tokenbucket",  # the one token bucket
    "gatewayd.uplink.ratelimit",  # backlog pacing
    "gatewayd.spool.frames",  # frame encoder
    "gatewayd.spool.ledger",  # delivery ledger
    "gatewayd.samples",
)

#: Standard-library modules a core must not import: sockets, event loops, processes,
#: threads, signals, databases, files and paths, clocks, logging.
FORBIDDEN = frozenset(
    {
        "asyncio", "socket", "socketserver", "ssl", "select", "selectors", "http", "urllib",
        "ftplib", "smtplib", "sqlite3", "dbm", "shelve", "subprocess", "multiprocessing",
        "threading", "concurrent", "signal", "os", "pathlib", "io", "shutil", "tempfile",
        "glob", "fcntl", "mmap", "ctypes", "time", "logging",
    }
)  # fmt: skip

#: Imports still allowed although impure: (importing module, imported top-level name).
#: A shrinking list, empty now: an entry must say what removes it.
ALLOWED: frozenset[tuple[str, str]] = frozenset()


def _path_of(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(module: str, path: Path) -> list[str]:
    """Module names `module` imports when run (TYPE_CHECKING blocks left out)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and _is_type_checking(node.test)
        for stmt in node.body
        for inner in ast.walk(stmt)
    }
    names: list[str] = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            names.append(source)
            # `from package import module` imports that module too.
            names.extend(
                f"{source}.{alias.name}"
                for alias in node.names
                if _path_of(f"{source}.{alias.name}") is not None
            )
    return names


def violations(core: str) -> list[str]:
    """Each impure import `core` reaches, as 'a -> b -> ... -> name (why)'."""
    found: list[str] = []
    seen: set[str] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [(core, (core,))]
    while todo:
        module, chain = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        # Importing a.b.c runs a/__init__ and a/b/__init__ first.
        parts = module.split(".")
        parents = [".".join(parts[:i]) for i in range(1, len(parts))]
        todo.extend((parent, (*chain, parent)) for parent in parents)
        path = _path_of(module)
        assert path is not None, f"{' -> '.join(chain)}: no such gatewayd module"
        for name in _imported(module, path):
            top = name.split(".")[0]
            if top == "gatewayd":
                if _path_of(name) is not None:
                    todo.append((name, (*chain, name)))
                continue
            if (module, top) in ALLOWED:
                continue
            if top not in sys.stdlib_module_names:
                found.append(f"{' -> '.join(chain)} -> {name} (third-party)")
            elif top in FORBIDDEN:
                found.append(f"{' -> '.join(chain)} -> {name} (I/O)")
    return sorted(found)


def test_pure_cores_import_only_the_standard_librarys_pure_part() -> None:
    """No core reaches a third-party or I/O module, directly or through gatewayd modules."""
    assert {core: violations(core) for core in CORES} == {core: [] for core in CORES}


def test_the_walk_finds_impure_imports_directly_and_through_gatewayd_modules() -> None:
    """The walker is not blind: the reader's structlog (direct) and pydantic reached
    through the mapping stage's config import (transitive) are both reported."""
    reader = violations("gatewayd.modbus.reader")
    assert any(v.endswith("-> structlog (third-party)") for v in reader)
    stage = violations("gatewayd.mapping.stage")
    assert "gatewayd.mapping.stage -> gatewayd.config.models -> pydantic (third-party)" in stage
    assert not any("TYPE_CHECKING" in v for v in reader)
