"""Sub-device lifecycle against Debian's mosquitto and a cloud written from the spec alone.

`gatewayd run` (a subprocess) reads nameplate registers from a Modbus device written by
hand and sends them with the device's static attributes and tags; `gatewayd topo` compares,
adds and prunes the topology. The spec cloud (no gatewayd import, enos-protocol.md §3.4 and
§3.6) checks each request's shape, signs, the 200-attribute limit, the product model's
names and the 1256 rule (an online sub-device cannot be unbound).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.integration.mosquitto_fixtures import Mosquitto
from tests.integration.test_spec_cloud_e2e import (
    MODEL,
    Site,
    broker,  # noqa: F401 (the module's mosquitto fixture)
    daemon,
    logged_in,
    make_site,
    wait_for,
)

NAMEPLATE = [
    {"attribute": "serial", "table": "holding", "address": 40, "type": "string", "count": 4},
    {"attribute": "firmware", "table": "holding", "address": 50, "type": "uint16"},
    {"attribute": "ratedPower", "table": "holding", "address": 51, "type": "int16",
     "scale": 0.5},
]  # fmt: skip
STATIC = {"site": "North-2", "commissioned": "2026-11-30"}


def expected(unit: int) -> dict[str, Any]:
    return {"serial": f"SN00000{unit}", "firmware": 300 + unit, "ratedPower": 12.5, **STATIC}


def nameplate_site(site: Site) -> None:
    """Add the nameplate registers, the model's attributes and the static ones."""
    for unit in (1, 2):
        registers = site.device.units[unit].holding
        text = f"SN00000{unit}".encode()
        registers[40:44] = [int.from_bytes(text[i : i + 2], "big") for i in range(0, 8, 2)]
        registers[50] = 300 + unit
        registers[51] = 25  # × 0.5
    models = site.path.parent / "models" / "meter.yaml"
    models.write_text(yaml.safe_dump({**MODEL, "attributes": NAMEPLATE}))
    doc = yaml.safe_load(site.path.read_text())
    for device in doc["devices"]:
        device["attributes"] = STATIC
    site.path.write_text(yaml.safe_dump(doc, sort_keys=False))


def attribute_passes(site: Site) -> int:
    """'sub-device attribute pass' lines in the daemon's JSON log (all runs)."""
    if not site.log.exists():
        return 0
    count = 0
    for line in site.log.read_text().splitlines():
        if line.startswith("{") and json.loads(line).get("event") == "sub-device attribute pass":
            count += 1
    return count


async def test_spec_cloud_gets_attributes_once_across_restarts(
    tmp_path: Path,
    broker: Mosquitto,  # noqa: F811
) -> None:
    """Each meter's attributes arrive in one §3.6 update on its own topic; a restart with
    the same registers sends none; every request met the spec."""
    async with make_site(tmp_path, broker) as site:
        nameplate_site(site)
        site.cloud.attribute_model = set(expected(1))
        async with daemon(site):
            await wait_for(site, lambda: attribute_passes(site) >= 2, 30, "attribute passes")
        updates = {u.key: u.attributes for u in site.cloud.records.attributes}
        assert len(site.cloud.records.attributes) == 2
        assert updates == {("meterPK", "meter1"): expected(1), ("meterPK", "meter2"): expected(2)}
        async with daemon(site):
            await wait_for(site, lambda: logged_in(site), 30, "meters logged in again")
            await wait_for(site, lambda: attribute_passes(site) >= 4, 30, "second run's passes")
        assert len(site.cloud.records.attributes) == 2
        assert site.cloud.records.problems == []
        topics = {r.topic for r in site.cloud.records.requests if r.method.startswith("thing.attr")}
        assert topics == {
            "/sys/meterPK/meter1/thing/attribute/update",
            "/sys/meterPK/meter2/thing/attribute/update",
        }


def tag_site(site: Site, own: dict[str, Any]) -> None:
    """Set the config's default tags and meter-1's own tags."""
    doc = yaml.safe_load(site.path.read_text())
    doc["default_tags"] = {"owner": "ACME", "critical": True}
    doc["devices"][0]["tags"] = own
    site.path.write_text(yaml.safe_dump(doc, sort_keys=False))


async def test_spec_cloud_gets_tags_and_deletions(
    tmp_path: Path,
    broker: Mosquitto,  # noqa: F811
) -> None:
    """Tags arrive as §3.6 [{tagKey, tagValue}] strings; a tag dropped from the config is
    removed with {tags: [keys]}; every request met the spec."""
    async with make_site(tmp_path, broker) as site:
        tag_site(site, {"line": "A"})
        async with daemon(site):
            await wait_for(
                site, lambda: len(site.cloud.records.tag_requests) >= 2, 30, "tag updates"
            )
        assert site.cloud.tags == {
            ("meterPK", "meter1"): {"owner": "ACME", "critical": "true", "line": "A"},
            ("meterPK", "meter2"): {"owner": "ACME", "critical": "true"},
        }
        tag_site(site, {})
        async with daemon(site):
            await wait_for(
                site, lambda: len(site.cloud.records.tag_requests) >= 3, 30, "tag deletion"
            )
        assert site.cloud.tags[("meterPK", "meter1")] == {"owner": "ACME", "critical": "true"}
        assert [(r[1], r[2], r[3]) for r in site.cloud.records.tag_requests[2:]] == [
            (("meterPK", "meter1"), "thing.tag.delete", {"tags": ["line"]})
        ]
        assert site.cloud.records.problems == []


async def test_spec_cloud_topo_add_and_prune(tmp_path: Path, broker: Mosquitto) -> None:  # noqa: F811
    """`gatewayd topo --add --prune`: meter2 bound with a valid §3.4 sign, the online extra
    logged out before its removal (else 1256), one line per sub-device, exit 0."""
    extra = ("meterPK", "meter9")
    async with make_site(tmp_path, broker, topology={("meterPK", "meter1"), extra}) as site:
        site.cloud.online.add(extra)
        command = [sys.executable, "-m", "gatewayd", "topo", str(site.path)]
        process = await asyncio.create_subprocess_exec(
            *command, "--add", "--prune",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert (process.returncode, err.decode()) == (0, "")
        assert out.decode().splitlines() == [
            "present  meterPK/meter1  meter-1",
            "missing  meterPK/meter2  meter-2",
            "extra    meterPK/meter9",
            "added    meterPK/meter2  meter-2",
            "removed  meterPK/meter9",
            "1 present, 1 missing, 1 extra, 1 added, 1 removed",
        ]
        assert site.cloud.topology == {("meterPK", "meter1"), ("meterPK", "meter2")}
        methods = site.cloud.records.methods()
        assert methods == ["thing.topo.get", "thing.topo.add", "combine.logout",
                           "thing.topo.delete"]  # fmt: skip
        assert site.cloud.records.problems == []


async def test_spec_cloud_check_cloud_names_the_point_its_model_lacks(
    tmp_path: Path,
    broker: Mosquitto,  # noqa: F811
) -> None:
    """`gatewayd check --cloud` against a TSL written from §3.6: the meter model's `temp`
    is missing there, printed at its line and column, exit 78; the sub-device is logged
    in for the request and out again."""
    async with make_site(tmp_path, broker) as site:
        site.cloud.tsl = {
            "tslMeasurepointMap": {
                "voltage": {"identifier": "voltage", "hasQuality": True,
                            "dataDefinition": {"dataType": "DOUBLE"}},
                "energy": {"identifier": "energy", "dataDefinition": {"dataType": "LONG"}},
                "setpoint": {"identifier": "setpoint", "dataDefinition": {"dataType": "INT"}},
            },
            "tslEventMap": {"overTemp": {"identifier": "overTemp", "outputData": [
                {"identifier": "measurepoint"}, {"identifier": "value"}]}},
            "tslServiceMap": {"nudge": {"identifier": "nudge"}},
            "tslAttributeMap": {},
        }  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gatewayd", "check", "--cloud", "gatewayd.yaml",
            cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 60)
        lines = (tmp_path / "models" / "meter.yaml").read_text().splitlines()
        line = next(i for i, text in enumerate(lines, 1) if text.endswith("measurepoint: temp"))
        column = lines[line - 1].index("temp") + 1
        assert (process.returncode, out) == (78, b"")
        assert err.decode().splitlines() == [
            f"models/meter.yaml:{line}:{column}: points[2].measurepoint: measurepoint 'temp'"
            " is not in the cloud model (withheld)",
            "1 error",
        ]
        assert site.cloud.records.methods() == [
            "combine.login", "thing.tsltemplate.get", "combine.logout"]  # fmt: skip
        assert site.cloud.records.problems == []


async def test_spec_cloud_registers_binds_and_logs_in_a_new_meter_once(
    tmp_path: Path,
    broker: Mosquitto,  # noqa: F811
) -> None:
    """meter-2 with `register:` and no secret: registered per §3.4 (name, timezone,
    attributes), bound with a sign made from the returned secret, logged in; a restart
    uses the kept secret and registers nothing."""
    meter2 = ("meterPK", "meter2")
    async with make_site(tmp_path, broker) as site:
        del site.cloud.sub_secrets[meter2]
        site.cloud.topology.discard(meter2)
        doc = yaml.safe_load(site.path.read_text())
        del doc["devices"][1]["device_secret"]
        doc["devices"][1]["register"] = {"name": "Meter 2", "timezone": "+08:00",
                                         "attributes": {"site": "North-2"}}  # fmt: skip
        site.path.write_text(yaml.safe_dump(doc, sort_keys=False))
        async with daemon(site):
            await wait_for(site, lambda: meter2 in site.cloud.online, 30, "meter2 logged in")
        ((_, key, entry),) = site.cloud.records.registered
        assert key == meter2
        assert entry == {"productKey": "meterPK", "deviceKey": "meter2",
                         "deviceName": {"defaultValue": "Meter 2"}, "timezone": "+08:00",
                         "deviceAttributes": {"site": "North-2"}}  # fmt: skip
        stored = json.loads((tmp_path / "registered" / "meterPK&meter2.json").read_text())
        assert stored["deviceSecret"] == site.cloud.sub_secrets[meter2]
        assert stored["deviceSecret"] not in site.log.read_text()
        assert meter2 in site.cloud.topology
        site.cloud.online.clear()
        async with daemon(site):
            await wait_for(site, lambda: logged_in(site), 30, "both meters logged in again")
        assert len(site.cloud.records.registered) == 1
        assert site.cloud.records.problems == []
