"""Our own Modbus failure types: the pymodbus seam translates every library failure into these."""

from __future__ import annotations


class ModbusError(Exception):
    """Base of every Modbus-side failure; carries no pymodbus type past the seam."""


class DeviceTimeout(ModbusError):
    """The device did not answer (or answered garbage) within its timeout and retries."""


class DeviceProtocolError(DeviceTimeout):
    """The device answered, but not soundly: a wrong transaction id, unit id or function
    code, a byte count or length that does not fit the request, an undecodable frame.

    Nothing of such an answer is used. It is handled like a timeout (the request's points
    are BAD; it is a `DeviceTimeout`, so every caller that retries or fails on a timeout does
    the same here), but it is no evidence that the read was too long.
    """


class DeviceRejected(ModbusError):
    """The device answered with a Modbus exception response (e.g. 2 = illegal data address)."""

    def __init__(self, code: int, message: str = "") -> None:
        self.code = code
        super().__init__(message or f"device answered Modbus exception {code}")


class BusUnavailable(ModbusError):
    """The bus itself is down: the TCP endpoint refuses, or the serial port cannot be opened."""


ILLEGAL_FUNCTION = 1
ILLEGAL_DATA_ADDRESS = 2
ILLEGAL_DATA_VALUE = 3
DEVICE_FAILURE = 4
