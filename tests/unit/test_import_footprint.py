"""The daemon's import footprint: what `gatewayd run` loads and what it must not.

The test venv also holds the `sim` extra (amqtt and its tail: typer, rich, pygments), which a
gateway box never has. To measure what a box would load, the subprocess makes every module
outside the product's dependency closure unimportable (a `None` entry in `sys.modules`, what
an absent distribution looks like to `import`). The closure is read from pyproject.toml's
`dependencies` and, transitively, from the installed distributions' metadata.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Collection
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
HARNESS_TAIL = {"amqtt", "typer", "rich", "pygments"}


def product_distributions() -> set[str]:
    """Canonical names of the distributions a plain `pip install gatewayd` brings."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    todo = [(Requirement(text), "") for text in project["dependencies"]]
    seen: set[str] = set()
    while todo:
        requirement, extra = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        wanted = [(name, "")] + [(name, e) for e in requirement.extras]
        if name in seen and not requirement.extras:
            continue
        seen.add(name)
        for dist, dist_extra in wanted:
            todo.extend((Requirement(text), dist_extra) for text in metadata.requires(dist) or [])
    return seen


def modules_outside(distributions: set[str]) -> set[str]:
    """Installed top-level modules that belong to no distribution in `distributions`."""
    return {
        module
        for module, dists in metadata.packages_distributions().items()
        if module.isidentifier()
        and module != "gatewayd"
        and not {canonicalize_name(d) for d in dists} & distributions
    }


def modules_after(statement: str, *, hidden: Collection[str] = ()) -> set[str]:
    """Top-level module names a fresh interpreter holds after `statement`."""
    listing = "print(' '.join(sorted({m.split('.')[0] for m, v in sys.modules.items() if v})))"
    code = "\n".join(
        ["import sys", f"for name in {sorted(hidden)!r}: sys.modules[name] = None",
         statement, listing]
    )  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(out.stdout.split())


def test_the_product_closure_leaves_out_the_harness_tail() -> None:
    """The closure holds the daemon's dependencies and none of amqtt, typer, rich, pygments."""
    closure = product_distributions()
    assert {"structlog", "pydantic", "pydantic-core", "paho-mqtt", "pyserial"} <= closure
    assert not closure & HARNESS_TAIL
    hidden = modules_outside(closure)
    assert hidden >= HARNESS_TAIL  # installed here (the sim extra), so they must be hidden
    assert not hidden & {"structlog", "pydantic", "yaml", "pymodbus", "serial"}


def test_daemon_import_loads_only_product_dependencies() -> None:
    """`gatewayd run`'s modules import on the product closure alone, without rich or amqtt."""
    hidden = modules_outside(product_distributions())
    loaded = modules_after("import gatewayd.app, gatewayd.daemon_cli", hidden=hidden)
    assert {"gatewayd", "structlog", "pydantic", "paho", "yaml"} <= loaded
    assert not loaded & hidden
    assert not loaded & HARNESS_TAIL


def test_importing_the_package_has_no_side_effects() -> None:
    """`import gatewayd` loads gatewayd and nothing else (no structlog, no sys.modules tricks)."""
    baseline = modules_after("pass")
    assert modules_after("import gatewayd") - baseline == {"gatewayd"}
