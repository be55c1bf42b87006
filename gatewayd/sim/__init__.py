"""The simulation harness: device simulator, EnOS emulator and demo (the `sim` extra).

A guest in the package: no product module imports it (`gatewayd.harness` loads its command
line by name), and the Debian package leaves it out.
"""
