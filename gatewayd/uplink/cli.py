"""`gatewayd topo CONFIG [--add] [--prune] [--json]`: the gateway's topology, config vs cloud.

Signs in as the gateway (one CONNECT, counted in the daemon's `connects.json`), reads
`thing.topo.get` and prints each sub-device as `present` (in both), `missing` (only in the
config: it cannot log in until added) or `extra` (only in the cloud). `--add` binds the
missing ones (`thing.topo.add`, signed like a login); `--prune` removes the extras
(`thing.topo.delete`), logging each out first because EnOS refuses to remove an online
sub-device (1256).

Exit statuses: 0 done (whatever the diff); 69 EnOS unreachable or not answering; 75
(EX_TEMPFAIL) the CONNECT budget is spent (the message says how long to wait); 76 EnOS
refused an add or a removal (each named on stderr); 78 invalid config.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from gatewayd.config.cli import load_or_report
from gatewayd.config.models import Config, DeviceConfig

EX_OK = 0
EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75
EX_PROTOCOL = 76
EX_CONFIG = 78
ONLINE = 1256

PROG = "gatewayd topo"


def register(subparsers: Any) -> None:
    """Add `topo`."""
    topo = subparsers.add_parser(
        "topo",
        help="compare the gateway's topology in EnOS with the config (--add, --prune)",
        description="Print the sub-devices present, missing from and extra in the cloud"
        " topology; optionally add the missing ones and remove the extras.",
    )
    topo.add_argument("config", type=Path, metavar="CONFIG", help="path to gatewayd.yaml")
    topo.add_argument("--add", action="store_true", help="add the missing sub-devices")
    topo.add_argument(
        "--prune", action="store_true", help="log out and remove the extra sub-devices"
    )
    topo.add_argument("--json", action="store_true", help="print one JSON object")
    topo.set_defaults(func=run_topo)


def run_topo(args: argparse.Namespace) -> int:
    """The command's entry point."""
    config = load_or_report(args.config)
    if config is None:
        return EX_CONFIG
    from gatewayd.app import register_secrets, state_dir  # noqa: PLC0415 - heavy, only here

    register_secrets(config)
    return asyncio.run(_topo(config, state_dir(config), add=args.add, prune=args.prune,
                             as_json=args.json))  # fmt: skip


def _label(key: tuple[str, str], names: dict[tuple[str, str], str]) -> str:
    name = names.get(key)
    return f"{key[0]}/{key[1]}" + (f"  {name}" if name else "")


async def _topo(config: Config, state: Path, *, add: bool, prune: bool, as_json: bool) -> int:
    from gatewayd.enos.session import BrokerUnavailable  # noqa: PLC0415
    from gatewayd.uplink.oneshot import BudgetSpent, gateway_session  # noqa: PLC0415

    try:
        async with gateway_session(config, state) as session:
            return await _with_session(config, session, add=add, prune=prune, as_json=as_json)
    except BudgetSpent as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    except BrokerUnavailable as exc:
        print(f"{PROG}: cannot connect to EnOS: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE


async def _with_session(
    config: Config, session: Any, *, add: bool, prune: bool, as_json: bool
) -> int:
    from gatewayd.enos import messages  # noqa: PLC0415
    from gatewayd.enos.ids import IdGenerator  # noqa: PLC0415
    from gatewayd.uplink.topology import TopoDiff, read_topology  # noqa: PLC0415

    gw = config.gateway
    ids = IdGenerator.from_time_ms(int(time.time() * 1000))
    found, why = await read_topology(session, gw.product_key, gw.device_key, ids.next_id())
    if found is None:
        print(f"{PROG}: {why}", file=sys.stderr)
        return EX_UNAVAILABLE
    devices: dict[tuple[str, str], DeviceConfig] = {
        (d.product_key, d.device_key): d for d in config.devices if d.enabled
    }
    names = {k: d.name for k, d in devices.items()}
    diff = TopoDiff.of(devices, found)
    done: dict[str, list[tuple[str, str]]] = {"added": [], "removed": []}
    failed: dict[tuple[str, str], str] = {}

    async def ask(request: messages.Request) -> messages.Reply | None:
        from gatewayd.enos.session import ReplyTimeout  # noqa: PLC0415

        try:
            raw = await session.request(request.topic, request.id, request.payload)
            return messages.decode_reply(raw.payload)
        except (ReplyTimeout, messages.MalformedMessage) as exc:
            print(f"{PROG}: {request.method}: {exc}", file=sys.stderr)
            return None

    if add:
        for key in diff.missing:
            device = devices[key]
            secret = device.device_secret.get_secret_value() if device.device_secret else ""
            reply = await ask(messages.topo_add(
                gw.product_key, gw.device_key, id=ids.next_id(),
                devices=[messages.SubDeviceCredentials(*key, secret)],
                timestamp=str(int(time.time() * 1000)), sign_method=gw.sign_method,
            ))  # fmt: skip
            if reply is not None and reply.ok:
                done["added"].append(key)
            else:
                failed[key] = _why(reply)
    if prune:
        for key in diff.extra:
            ref = messages.DeviceRef(*key)
            # EnOS refuses to unbind an online sub-device (1256): log it out first.
            await ask(messages.combine_logout(gw.product_key, gw.device_key, id=ids.next_id(),
                                              device=ref))  # fmt: skip
            reply = await ask(messages.topo_delete(gw.product_key, gw.device_key,
                                                   id=ids.next_id(), devices=[ref]))  # fmt: skip
            if reply is not None and reply.ok:
                done["removed"].append(key)
            elif reply is not None and reply.code == ONLINE:
                failed[key] = f"{_why(reply)}: still online (logged in through another gateway?)"
            else:
                failed[key] = _why(reply)
    _print(diff, done, failed, names, as_json=as_json)
    for key, reason in failed.items():
        print(f"{PROG}: {key[0]}/{key[1]}: {reason}", file=sys.stderr)
    return EX_PROTOCOL if failed else EX_OK


def _why(reply: Any) -> str:
    if reply is None:
        return "no reply"
    return f"refused with {reply.code} {reply.message}".strip()


def _print(
    diff: Any,
    done: dict[str, list[tuple[str, str]]],
    failed: dict[tuple[str, str], str],
    names: dict[tuple[str, str], str],
    *,
    as_json: bool,
) -> None:
    groups = {"present": diff.present, "missing": diff.missing, "extra": diff.extra, **done}
    if as_json:
        document = {
            group: [{"product_key": k[0], "device_key": k[1], "name": names.get(k)} for k in keys]
            for group, keys in groups.items()
        }
        document["failed"] = [
            {"product_key": k[0], "device_key": k[1], "reason": r} for k, r in failed.items()
        ]
        print(json.dumps(document, indent=2))
        return
    for group, keys in groups.items():
        for key in keys:
            print(f"{group:<8} {_label(key, names)}")
    summary = ", ".join(f"{len(keys)} {group}" for group, keys in groups.items())
    print(summary)
