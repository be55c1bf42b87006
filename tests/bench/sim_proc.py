"""The device simulator in its own process, driven by one-line commands on stdin.

Run by the benchmarks and the chaos suite so that the simulator's CPU is never counted as
the daemon's::

    python -m tests.bench.sim_proc CONFIG BUS [--serial-port TTY]

prints ``PORT <n>`` once serving, then answers each command line with one JSON line:

- ``stats``                      → {"requests": {unit: n}, "exceptions": {unit: {code: n}}}
- ``reset``                      → counters restarted from zero
- ``fault UNIT KEY JSONVALUE``   → set `UnitFaults.KEY` (silent, turnaround, max_registers)
- ``holes UNIT TABLE A,B,...``   → add exception-02 holes
- ``quit``                       → stop serving and exit
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from gatewayd.config.loader import load_config
from gatewayd.config.models import Table
from gatewayd.sim.device import DeviceSimulator


def _stats(sim: DeviceSimulator) -> dict[str, Any]:
    return {
        "requests": {u: sim.stats(u).total_requests for u in sim.unit_ids},
        "exceptions": {u: dict(sim.stats(u).exceptions) for u in sim.unit_ids},
        "answers": {u: sim.stats(u).answers for u in sim.unit_ids},
    }


def handle(sim: DeviceSimulator, line: str) -> dict[str, Any] | None:
    """Apply one command; the reply to print, None to quit."""
    words = line.split()
    if not words or words[0] == "quit":
        return None
    if words[0] == "stats":
        return _stats(sim)
    if words[0] == "reset":
        for unit in sim.unit_ids:
            sim.stats(unit).reset()
        return {"ok": True}
    if words[0] == "fault":
        setattr(sim.faults(int(words[1])), words[2], json.loads(words[3]))
        return {"ok": True}
    if words[0] == "holes":
        sim.faults(int(words[1])).add_holes(Table(words[2]), [int(a) for a in words[3].split(",")])
        return {"ok": True}
    return {"error": f"unknown command {words[0]!r}"}


async def serve(config_path: Path, bus: str, serial_port: str | None) -> None:
    """Serve `bus` of the config until `quit` or stdin closes."""
    config = load_config(config_path)
    kwargs: dict[str, Any] = {"serial_port": serial_port} if serial_port else {}
    async with DeviceSimulator.from_config(config, bus, **kwargs) as sim:
        print(f"PORT {sim.port}", flush=True)
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            reply = handle(sim, line)
            if reply is None:
                break
            print(json.dumps(reply), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("bus")
    parser.add_argument("--serial-port")
    args = parser.parse_args()
    asyncio.run(serve(args.config, args.bus, args.serial_port))


if __name__ == "__main__":
    main()
