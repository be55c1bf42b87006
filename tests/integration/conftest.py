"""Shared integration fixtures: each team's fixtures live in their own module, imported here."""

from tests.integration.modbus_fixtures import modbus_model, modbus_sim, socat_pty_pair

__all__ = ["modbus_model", "modbus_sim", "socat_pty_pair"]
