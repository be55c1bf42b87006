"""Shared integration fixtures: each team's fixtures live in their own module, imported here."""

from tests.integration.emulator_fixtures import (
    enos_emulator,
    enos_emulator_config,
    enos_emulator_factory,
)
from tests.integration.modbus_fixtures import modbus_model, modbus_sim, socat_pty_pair

__all__ = [
    "enos_emulator",
    "enos_emulator_config",
    "enos_emulator_factory",
    "modbus_model",
    "modbus_sim",
    "socat_pty_pair",
]
