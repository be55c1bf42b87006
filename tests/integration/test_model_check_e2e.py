"""The model check against the EnOS emulator's `thing.tsltemplate.get`: the daemon withholds
a point the cloud model lacks, and `gatewayd check --cloud` prints exact FILE:LINE:COL lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import structlog

from gatewayd.app import Daemon
from gatewayd.sim.emulator import EnosEmulator
from gatewayd.sim.emulator.config import EmulatorConfig, MeasurepointSpec
from gatewayd.spool.worker import Spool
from gatewayd.systemd import Notifier
from tests.integration.test_attributes_e2e import Site, cloud_config, make_site
from tests.support import async_wait_until


def drifted_cloud(site: Site, *, more: bool) -> EmulatorConfig:
    """The product model without `energy`; `more`: also `voltage` as text, no `firmware`."""
    cloud = cloud_config(site.config, without="firmware" if more else None)
    models = {}
    for name, model in cloud.models.items():
        points = {k: v for k, v in model.measurepoints.items() if k != "energy"}
        if "voltage" in points and more:
            points["voltage"] = MeasurepointSpec(type="string")
        models[name] = model.model_copy(update={"measurepoints": points})
    return cloud.model_copy(update={"models": models})


@contextlib.asynccontextmanager
async def drifted_site(tmp: Path, *, more: bool = False) -> AsyncIterator[Site]:
    async with make_site(tmp) as site:
        await site.emulator.stop()
        cloud = drifted_cloud(site, more=more)
        site.emulator = EnosEmulator(cloud, port=site.config.gateway.broker.port)
        await site.emulator.start()
        try:
            yield site
        finally:
            await site.emulator.stop()


async def test_point_missing_from_cloud_model_is_withheld_and_the_rest_delivered(
    tmp_path: Path,
) -> None:
    """`energy` is not in the cloud model: never sent (no 1204, no dead letter), named once
    per device in the log and listed in the status; `voltage` keeps arriving."""
    async with drifted_site(tmp_path) as site:
        daemon = Daemon(site.config_path, site.config, notifier=Notifier(environ={}))
        with structlog.testing.capture_logs() as logs:
            task = asyncio.create_task(daemon.run())
            try:
                await async_wait_until(
                    lambda: (
                        sum(1 for p in site.emulator.records.points if p.point == "voltage") >= 10
                    ),
                    timeout=30,
                    what="voltage values",
                )
                assert daemon.spool is not None
                report = await daemon.report(daemon.spool)
            finally:
                daemon.request_stop()
                assert await asyncio.wait_for(task, 20) == 0
        assert report.withheld == {"meter-1": ["energy"], "meter-2": ["energy"]}
        assert {p.point for p in site.emulator.records.points} == {"voltage"}
        assert site.emulator.stats.replies_by_code[1204] == 0
        spool = await Spool.open(site.config.spool)
        try:
            assert (await spool.counts()).dead_letters == 0
        finally:
            await spool.close()
        missing = [
            (e["device"], e["mismatch"])
            for e in logs
            if e["event"] == "device differs from its product's cloud model"
            and "energy" in e["mismatch"]
        ]
        assert sorted(missing) == [
            ("meter-1", "points[1].measurepoint: measurepoint 'energy' is not in the cloud"
                        " model (withheld)"),
            ("meter-2", "points[1].measurepoint: measurepoint 'energy' is not in the cloud"
                        " model (withheld)"),
        ]  # fmt: skip


async def test_check_cloud_prints_exact_locations_and_exits_78(tmp_path: Path) -> None:
    """`gatewayd check --cloud`: each mismatch as FILE:LINE:COL: path: message, exit 78."""
    async with drifted_site(tmp_path, more=True):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gatewayd", "check", "--cloud", "gatewayd.yaml",
            cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 78, err.decode()
        assert out.decode() == ""
        # The model file as yaml.safe_dump wrote it (keys sorted): attributes first.
        assert err.decode().splitlines() == [
            "models/meter.yaml:8:14: attributes[1].attribute: attribute 'firmware' is not in"
            " the cloud model",
            "models/meter.yaml:20:17: points[0].measurepoint: measurepoint 'voltage' sends"
            " float values but the cloud model's type is string",
            "models/meter.yaml:24:17: points[1].measurepoint: measurepoint 'energy' is not in"
            " the cloud model (withheld)",
            "3 errors",
        ]
