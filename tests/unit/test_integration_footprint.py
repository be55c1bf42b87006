"""httpx is loaded only where `integration.http` is used, never by the daemon or the CLI parser."""

from __future__ import annotations

from tests.unit.test_import_footprint import modules_after

HTTP_STACK = {"httpx", "httpcore", "h11", "anyio"}


def test_daemon_and_cli_parser_do_not_load_httpx() -> None:
    """`gatewayd run`'s imports and building every subcommand's parser leave httpx out."""
    loaded = modules_after(
        "import gatewayd.app, gatewayd.daemon_cli, gatewayd.cli\ngatewayd.cli.build_parser()"
    )
    assert "gatewayd" in loaded
    assert not loaded & HTTP_STACK


def test_the_integration_seam_loads_httpx() -> None:
    """The control: importing the seam does load httpx (the check above can fail)."""
    assert "httpx" in modules_after("import gatewayd.integration.http")
