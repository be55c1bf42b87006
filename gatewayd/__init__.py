"""gatewayd: Modbus devices to Envision EnOS, with a local store-and-forward spool."""

__version__ = "0.1.0"
