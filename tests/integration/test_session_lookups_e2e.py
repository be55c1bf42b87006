"""Session-start lookups against an EnOS emulator that never answers them.

`thing.topo.get` and `thing.tsltemplate.get` come before the first login and data of a
session. With `uplink.reply_timeout: 60s` a silent cloud would hold the data back for a
minute per lookup; the lookups are given up after `asking.LOOKUP_TIMEOUT_S` instead, the
session logs in as configured, sends every point, and says once what it gave up.
"""

from __future__ import annotations

from pathlib import Path

import structlog
import yaml

from gatewayd.config.loader import load_config
from gatewayd.uplink.asking import LOOKUP_TIMEOUT_S, lookup_timeout
from tests.integration.test_attributes_e2e import make_site, running
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
