"""Cloud commands for sub-devices: measurepoint set/get and services, written safely.

`command_handler_factory` is the `Daemon`'s command factory (`gatewayd run` passes it);
the handler (`handler.CloudCommands`) validates each command against the device model
(`validate`, pure), runs it as one priority operation on the device's bus (`bus_ops`) and
reports every point's outcome (`report`). Sub-device lifecycle commands (combine.*) are
the uplink's own business.
"""

from gatewayd.commands.handler import CloudCommands, CommandSite, command_handler_factory

__all__ = ["CloudCommands", "CommandSite", "command_handler_factory"]
