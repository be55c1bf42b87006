"""`gatewayd` as a box runs it, from the dev venv: without the harness's dependencies.

    python -m tests.bench.box run CONFIG          (any `gatewayd` arguments)

The dev venv holds the `sim` extra (amqtt and its tail: typer, rich, pygments); a box never
does (a plain `pip install gatewayd`, the .deb). structlog imports rich whenever it can
(here 4.5 MiB of RSS and 0.05-0.3 s of start-up), so a benchmark that measures the daemon
in the dev venv makes them unimportable first, as they are on a box: a `None` entry in
`sys.modules` is what an absent distribution looks like to `import`.
"""

from __future__ import annotations

import sys

#: Top-level modules that come only with the `sim` extra.
HARNESS_TAIL = ("amqtt", "typer", "rich", "pygments")


def as_on_a_box() -> None:
    """Make the harness's dependencies unimportable in this process (call before gatewayd)."""
    for name in HARNESS_TAIL:
        if sys.modules.get(name) is not None:
            raise RuntimeError(f"{name} is imported already: call as_on_a_box() first")
        sys.modules[name] = None  # type: ignore[assignment]


def main() -> int:
    """`gatewayd ARGS` with the harness's dependencies hidden."""
    as_on_a_box()
    from gatewayd.cli import main as gatewayd

    return gatewayd(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
