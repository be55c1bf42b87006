"""The daemon's "send the next reading" signals for the report filter: combine.enable and
values the real spool loses (dead letters, drops)."""

from __future__ import annotations

from pathlib import Path

import yaml

from gatewayd.app import Daemon
from gatewayd.config.loader import load_config
from gatewayd.enos.messages import CommandKind
from gatewayd.samples import Sample
from gatewayd.spool.rows import Kind
from gatewayd.spool.worker import Spool
from gatewayd.systemd import Notifier
from tests.integration.test_run_e2e import write_site
from tests.support import free_port


def _daemon(tmp_path: Path) -> Daemon:
    path = write_site(tmp_path, free_port(), free_port())
    document = yaml.safe_load(path.read_text())
    for device in document["devices"]:
        device["report"] = {"on": "change", "deadband": 1}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    config = load_config(path)
    assert config.devices[0].report is not None
    return Daemon(path, config, notifier=Notifier(environ={}))


def test_combine_enable_flags_the_device(tmp_path: Path) -> None:
    """An enabled device sends every point's next reading; a disable flags nothing."""
    daemon = _daemon(tmp_path)
    daemon._on_lifecycle("meter-1", CommandKind.COMBINE_DISABLE)
    assert daemon.resend.take("meter-1") is False
    daemon._on_lifecycle("meter-1", CommandKind.COMBINE_ENABLE)
    assert [daemon.resend.take("meter-1"), daemon.resend.take("meter-2")] == [True, False]


async def test_a_dead_lettered_value_resets_every_filter(tmp_path: Path) -> None:
    """Commits with no loss leave the filters alone; a dead letter in the real spool makes
    the next commit flag every device."""
    daemon = _daemon(tmp_path)
    async with await Spool.open(daemon.config.spool) as spool:
        generation = daemon.resend.generation
        await spool.append([Sample("meter-1", "voltage", 230.0, 1000)], [], 1000)
        await daemon._check_losses(spool)
        await spool.append([Sample("meter-1", "voltage", 231.0, 2000)], [], 2000)
        await daemon._check_losses(spool)
        assert daemon.resend.generation == generation
        frames = await spool.take_frames(1)
        assert await spool.dead_letter(Kind.SAMPLES, [frames[0].id], 1204, "bad", 3000) == 1
        await spool.append([Sample("meter-1", "voltage", 232.0, 3000)], [], 3000)
        await daemon._check_losses(spool)
        assert daemon.resend.generation == generation + 1


async def test_a_value_dropped_at_the_spool_cap_resets_every_filter(tmp_path: Path) -> None:
    """Filling the real spool past its 1 MiB cap drops the oldest frames: the commit that
    dropped them flags every device, the commits before it did not."""
    daemon = _daemon(tmp_path)
    spool_config = daemon.config.spool.model_copy(update={"max_bytes": 1 << 20})
    async with await Spool.open(spool_config) as spool:
        generation = daemon.resend.generation
        await daemon._check_losses(spool)
        appended = 0
        while (await spool.counts()).dropped_samples == 0:
            assert daemon.resend.generation == generation
            batch = [
                Sample(f"meter-{i % 2 + 1}", f"p{i % 5}", float(appended + i), appended + i)
                for i in range(250)
            ]
            await spool.append(batch, [], appended)
            appended += 250
            await daemon._check_losses(spool)
        assert daemon.resend.generation == generation + 1
