"""`gatewayd demo`: a whole simulated site, its cloud and the daemon in one process.

- `site`: writes the demo site (gatewayd.yaml + the example device models shipped as
  package data) into a scratch directory, on loopback ports chosen at start;
- `serial`: a `socat` pty pair standing in for the RS-485 line of the meters;
- `nameplate`: the nameplate registers of the simulated devices (what `attributes:` read);
- `tally`: what has arrived in the emulated cloud, per device (pure bookkeeping);
- `registered`: what the cloud holds about the devices the gateway registered itself;
- `render`: the live table, the plain progress line and the final summary (pure text);
- `runner`: starts simulator, emulator and daemon, cuts the uplink on request, refreshes
  the table and stops everything in order;
- `cli`: the `gatewayd demo` subcommand.
"""
