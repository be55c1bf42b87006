"""A site with file events (an outbox, integration.http at the emulated cloud) and drops."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from tests.integration.integration_http_support import ACCESS_KEY, ORG, SECRET_KEY
from tests.support import free_port, write_secret

#: tripRecord is file-typed in the emulated cloud's model too; faultLog only here (→ 1204).
MODEL = """\
name: meter
points:
  - {measurepoint: voltage, table: holding, address: 0, type: uint16}
file_events:
  - {event: tripRecord, file_param: capture, params: {reason: int, note: string}}
  - {event: faultLog, file_param: log}
"""


#: A capture rule declares tripRecord's file event implicitly (no `file_events` entry).
CAPTURE_MODEL = """\
name: meter
points:
  - {measurepoint: voltage, table: holding, address: 0, type: uint16}
  - {measurepoint: trip, table: coil, address: 0, type: bool}
events:
  - event: tripRecord
    rule: bit_set
    point: trip
    params: {reason: 7}
    capture: {points: [voltage], before: 2s, after: 1s, format: csv, param: capture}
"""


def write_site(
    root: Path, address: str, *, max_bytes: str = "1GiB", extra: str = "", model: str = MODEL
) -> Path:
    """gatewayd.yaml under `root`: meter-1 is the emulator's asset; outbox at root/outbox."""
    (root / "models").mkdir(parents=True, exist_ok=True)
    (root / "models" / "meter.yaml").write_text(model)
    (root / "outbox").mkdir(exist_ok=True)
    write_secret(root / "sa.secret", SECRET_KEY)
    config = root / "gatewayd.yaml"
    # Nothing listens on the broker's or the device's port: file events need neither.
    config.write_text(
        f"""\
gateway:
  product_key: gwPK
  device_key: gwDK
  device_secret: gw-secret
  broker: {{host: 127.0.0.1, port: {free_port()}}}
spool: {{path: state/spool.db}}
logging: {{format: json}}
buses: [{{name: plant, type: tcp, host: 127.0.0.1, port: {free_port()}}}]
devices:
  - {{name: meter-1, bus: plant, model: meter, product_key: subPK, device_key: meter1,
     device_secret: m1}}
integration:
  outbox: outbox
  max_bytes: {max_bytes}
  http:
    address: {address}
    org_id: {ORG}
    access_key: {ACCESS_KEY}
    secret_key_file: sa.secret
    connect_timeout: 5s
    timeout: 20s
{extra}"""
    )
    return config


def drop(
    outbox: Path,
    name: str,
    data: bytes,
    sidecar: dict[str, Any] | None = None,
    **overrides: Any,
) -> str:
    """Write a drop as the contract says (payload, then the sidecar by rename); its md5."""
    (outbox / name).write_bytes(data)
    doc = sidecar or {
        "device": "meter-1",
        "event": "tripRecord",
        "file_param": "capture",
        "params": {"reason": 7, "note": name},
    }
    doc = {**doc, **overrides}
    temp = outbox / f".{name}.json.tmp"
    temp.write_text(json.dumps(doc))
    os.replace(temp, outbox / f"{name}.json")
    return hashlib.md5(data).hexdigest()
