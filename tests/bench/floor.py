"""The floor: the least work any gateway could do for a site, to measure gatewayd against.

    python -m tests.bench.floor CONFIG STATS.json

Reads the same gatewayd config as the daemon and, on the same aligned grid, for every
device of its first bus (TCP; RTU for B4): block reads with pymodbus (optimal plan),
decode float32 registers with one `struct` call, one `thing.measurepoint.post.batch` JSON
per cycle (split only to stay under 512 KiB), published with paho at QoS 1 to the same
broker (the EnOS emulator, so sub-devices go out with ``allowOfflineSubDevice``). No
spool, no quality, no mapping, no events, no health, no checks, no retries, no replies
awaited. On SIGTERM it writes its cycle log (the `daemon_proc` format) to STATS.json.

It is a benchmark baseline, not product code: it imports paho and pymodbus directly.
"""

from __future__ import annotations

import asyncio
import json
import signal
import struct
import sys
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from gatewayd.config.loader import load_config
from gatewayd.config.models import Config, SerialBus, TcpBus
from gatewayd.enos import topics
from gatewayd.enos.sign import mqtt_credentials
from gatewayd.modbus.planner import plan_reads

MAX_MESSAGE = 500 * 1024


def connect_mqtt(config: Config) -> mqtt.Client:
    """A paho client logged in as the gateway (EnOS secure mode 2), network loop running."""
    gw = config.gateway
    secret = gw.device_secret.get_secret_value() if gw.device_secret else ""
    creds = mqtt_credentials(gw.product_key, gw.device_key, secret,
                             timestamp=str(int(time.time() * 1000)))  # fmt: skip
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=creds.client_id)
    client.username_pw_set(creds.username, creds.password)
    client.max_inflight_messages_set(100)
    client.connect(gw.broker.host, gw.broker.port, keepalive=60)
    client.loop_start()
    return client


def payloads(gw_pk: str, gw_dk: str, records: list[str], msg_id: int) -> list[bytes]:
    """post.batch payloads of pre-serialised records, each under `MAX_MESSAGE` bytes."""
    head = (f'{{"id":"{msg_id}","version":"1.0","method":"thing.measurepoint.post.batch",'
            f'"params":[')  # fmt: skip
    tail = '],"allowOfflineSubDevice":true}'
    out: list[bytes] = []
    chunk: list[str] = []
    size = len(head) + len(tail)
    for record in records:
        if chunk and size + len(record) + 1 > MAX_MESSAGE:
            out.append((head + ",".join(chunk) + tail).encode())
            chunk, size = [], len(head) + len(tail)
        chunk.append(record)
        size += len(record) + 1
    if chunk:
        out.append((head + ",".join(chunk) + tail).encode())
    return out


async def run(config_path: Path, stats_path: Path) -> None:
    """Poll and publish until SIGTERM, then write the cycle log."""
    config = load_config(config_path)
    bus = config.buses[0]
    devices = [d for d in config.devices if d.bus == bus.name]
    interval = devices[0].poll_interval
    model = config.models[devices[0].model]
    names = [p.measurepoint for p in model.points]
    blocks = [(r.start, r.count, r.points) for r in plan_reads(
        model.points, max_registers=125, max_bits=2000, gap_fill=124)]  # fmt: skip
    modbus: AsyncModbusTcpClient | AsyncModbusSerialClient
    if isinstance(bus, SerialBus):  # B4: the same line, bare pymodbus RTU
        modbus = AsyncModbusSerialClient(bus.device, baudrate=bus.baudrate,
                                         timeout=bus.timeout, retries=0)  # fmt: skip
    else:
        assert isinstance(bus, TcpBus)
        modbus = AsyncModbusTcpClient(bus.host, port=bus.port, timeout=bus.timeout, retries=0)
    await modbus.connect()
    client = connect_mqtt(config)
    topic = topics.measurepoint_post_batch(config.gateway.product_key, config.gateway.device_key)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    Path(f"{stats_path}.ready").write_text(str(int(time.time() * 1000)))  # noqa: ASYNC240
    cycles: list[tuple[Any, ...]] = []
    msg_id = 0
    while not stop.is_set():
        await asyncio.sleep(interval - time.time() % interval)  # the aligned grid: timing
        tick_ms = int(round(time.time() / interval) * interval * 1000)
        started = time.monotonic()
        records: list[str] = []
        requests = failed = good = 0
        for device in devices:
            values: dict[str, float] = {}
            for start, count, indexes in blocks:
                requests += 1
                reply = await modbus.read_holding_registers(
                    start, count=count, device_id=device.unit_id
                )
                if reply.isError():
                    failed += 1
                    continue
                floats = struct.unpack(
                    f">{count // 2}f", struct.pack(f">{count}H", *reply.registers)
                )
                for i in indexes:
                    values[names[i]] = floats[(model.points[i].address - start) // 2]
            good += len(values)
            records.append(
                json.dumps(
                    {
                        "productKey": device.product_key,
                        "deviceKey": device.device_key,
                        "time": tick_ms,
                        "measurepoints": values,
                    },
                    separators=(",", ":"),
                )
            )
        duration = time.monotonic() - started
        for payload in payloads(
            config.gateway.product_key, config.gateway.device_key, records, msg_id
        ):
            msg_id += 1
            client.publish(topic, payload, qos=1)
        cycles.append((tick_ms, duration, requests, failed, good, good, int(time.time() * 1000)))
    client.loop_stop()
    client.disconnect()
    modbus.close()
    per_second = {c[0] // 1000: c[4] for c in cycles}
    stats_path.write_text(json.dumps({"cycles": cycles, "per_second": per_second}))  # noqa: ASYNC240 - at exit


def main() -> None:
    asyncio.run(run(Path(sys.argv[1]), Path(sys.argv[2])))


if __name__ == "__main__":
    main()
