"""Session-start lookups against an EnOS emulator that never answers them.

`thing.topo.get` and `thing.tsltemplate.get` come before the first login and data of a
session. With `uplink.reply_timeout: 60s` a silent cloud would hold the data back for a
minute per lookup; the lookups are given up after `asking.LOOKUP_TIMEOUT_S` instead, the
session logs in as configured, sends every point, and says once what it gave up. Against
the project's emulator (in process) and against the cloud written from the spec on
Debian's mosquitto (`gatewayd run` as a subprocess).
"""

from __future__ import annotations

import json
from pathlib import Path

import structlog
import yaml

from gatewayd.config.loader import load_config
from gatewayd.uplink.asking import LOOKUP_TIMEOUT_S, lookup_timeout
from tests.integration.mosquitto_fixtures import Mosquitto
from tests.integration.test_attributes_e2e import make_site, running
from tests.integration.test_spec_cloud_e2e import (
    broker,  # noqa: F401 (the module's mosquitto fixture)
    daemon,
    wait_for,
)
from tests.integration.test_spec_cloud_e2e import make_site as make_spec_site
from tests.support import async_wait_until

#: Well under the 60 s reply timeout, well over the two lookups given up in turn.
DATA_BOUND_S = 40.0


def test_lookup_timeout_is_the_shorter_of_the_two() -> None:
    """A lookup waits at most LOOKUP_TIMEOUT_S, and never longer than the reply timeout."""
    assert lookup_timeout(60.0) == LOOKUP_TIMEOUT_S == 5.0
    assert lookup_timeout(2.0) == 2.0


async def test_silent_lookups_are_given_up_and_data_flows(tmp_path: Path) -> None:
    """topo.get and tsltemplate.get never answered, reply_timeout 60 s: both are given up
    after the lookup timeout (one warning each, naming it), both meters log in and their
    points reach the cloud well before 60 s; each lookup was asked once."""
    async with make_site(tmp_path) as site:
        doc = yaml.safe_load(site.config_path.read_text())
        doc["uplink"]["reply_timeout"] = "60s"
        site.config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        site.config = load_config(site.config_path)
        assert site.config.uplink.reply_timeout == 60.0
        faults = site.emulator.faults
        faults.drop_replies(None, method="thing.topo.get")
        faults.drop_replies(None, method="thing.tsltemplate.get")
        with structlog.testing.capture_logs() as logs:
            async with running(site):
                await async_wait_until(
                    lambda: (
                        {p.device_key for p in site.emulator.records.points} == {"meter1", "meter2"}
                    ),
                    DATA_BOUND_S,
                    "points of both meters in the cloud",
                )
        requests = site.emulator.stats.requests_by_method
        assert requests["thing.topo.get"] == 1
        assert requests["thing.tsltemplate.get"] == 1  # one product: meterPK
        assert site.emulator.stats.replies_dropped == 2
    topology = [e for e in logs if e["event"].startswith("cannot read the gateway topology")]
    assert [e["reason"] for e in topology] == ["no reply to thing.topo.get within 5s"]
    models = [e for e in logs if e["event"].startswith("cannot read the product's cloud model")]
    assert [(e["product_key"], e["reason"]) for e in models] == [
        ("meterPK", "no reply to thing.tsltemplate.get within 5s")
    ]


async def test_silent_lookups_against_the_spec_cloud(
    tmp_path: Path,
    broker: Mosquitto,  # noqa: F811
) -> None:
    """The same with `gatewayd run` as a subprocess, Debian's mosquitto, the hand-written
    device and the cloud written from the spec swallowing both lookups: both meters'
    points arrive well before the 60 s reply timeout, and the log names each lookup given
    up once."""
    async with make_spec_site(tmp_path, broker, uplink={"reply_timeout": "60s"}) as site:
        site.cloud.drop("thing.topo.get", times=100)
        site.cloud.drop("thing.tsltemplate.get", times=100)
        async with daemon(site):
            await wait_for(
                site,
                lambda: site.points_of("meter1") and site.points_of("meter2"),
                DATA_BOUND_S,
                "points of both meters in the spec cloud",
            )
        methods = site.cloud.records.methods()
        assert methods.count("thing.topo.get") == 1
        assert methods.count("thing.tsltemplate.get") == 1
        lines = [json.loads(line) for line in site.log.read_text().splitlines() if line[:1] == "{"]
    given_up = [
        (e["event"], e["reason"])
        for e in lines
        if e["event"].startswith(("cannot read the gateway topology", "cannot read the product"))
    ]
    assert given_up == [
        (
            "cannot read the gateway topology; logging in as configured",
            "no reply to thing.topo.get within 5s",
        ),
        (
            "cannot read the product's cloud model; sending every point",
            "no reply to thing.tsltemplate.get within 5s",
        ),
    ]


async def test_connection_lost_during_the_model_lookup_is_a_lost_connection(
    tmp_path: Path,
) -> None:
    """The cloud goes away while the gateway waits for thing.tsltemplate.get: the uplink
    logs a lost connection (one warning), not an uplink error with a traceback, and
    reconnects and delivers when the cloud is back."""
    async with make_site(tmp_path) as site:
        site.emulator.faults.drop_replies(1, method="thing.tsltemplate.get")
        requests = site.emulator.stats.requests_by_method
        with structlog.testing.capture_logs() as logs:
            async with running(site):
                await async_wait_until(
                    lambda: requests["thing.tsltemplate.get"] == 1, 30, "the model lookup"
                )
                await site.emulator.stop()
                await site.emulator.start()
                await async_wait_until(
                    lambda: requests["thing.tsltemplate.get"] == 2, 60, "the lookup asked again"
                )
                await async_wait_until(
                    lambda: site.emulator.records.points, 30, "points after the reconnect"
                )
    events = [(e["event"], e["log_level"]) for e in logs]
    assert ("uplink failed; reconnecting", "error") not in events
    lost = [e for e in logs if str(e["event"]).startswith("EnOS connection lost")]
    assert len(lost) == 1, events
