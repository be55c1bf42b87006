"""gatewayd: Modbus devices to Envision EnOS, with a local store-and-forward spool."""

import sys

__version__ = "0.1.0"


def _import_structlog_without_rich() -> None:
    """Import structlog with `rich` hidden, once, before any gatewayd module imports it.

    structlog's `dev` module imports `rich` eagerly whenever it is installed (amqtt's CLI
    pulls it in through typer). gatewayd renders its own console, JSON and journald output
    and never uses rich, and importing rich and pygments costs about 4 MiB of RSS and
    0.1 s of start-up on every run of a small gateway box. A `None` entry in `sys.modules`
    makes `import rich` raise ImportError, structlog's documented fallback; the entry is
    removed again, so anything else that wants rich still gets it.
    """
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]
    try:
        import structlog  # noqa: F401, PLC0415 - the import is the point
    finally:
        del sys.modules["rich"]


_import_structlog_without_rich()
