"""Test peers written from specifications, sharing no code with `gatewayd`.

A misreading shared by the daemon and the project's emulator (which import the same
`gatewayd.enos` modules) is invisible to tests that pair them; these peers are built only
from the EnOS protocol reference the project was built against (summarised in
`gatewayd/enos/PROTOCOL.md`), the MQTT 3.1.1 standard and the Modbus application
protocol, so they disagree with the daemon wherever it strays from those texts.
"""
