"""The mapping stage: reads → samples, blocks, events; muting decided in one place (pure)."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from gatewayd.config.models import BitRule, EventRule, PointConfig
from gatewayd.mapping.muting import Muting
from gatewayd.mapping.stage import DeviceMapping
from gatewayd.samples import Event, Quality, Sample, SampleBlock, Value

PACKAGE = Path(__file__).resolve().parents[2] / "gatewayd"


@dataclass
class Block:
    """A decoded response as the poller hands it over (written from the stage's spec)."""

    indices: tuple[int, ...]
    measurepoints: tuple[str, ...]
    values: list[Value]
    nonfinite: tuple[int, ...]
    ts_ms: int
    ascending: bool = True


@dataclass
class Failed:
    """A point whose read failed."""

    index: int
    ts_ms: int


def point(name: str, address: int, *, quality: bool = False) -> PointConfig:
    return PointConfig.model_validate(
        {
            "measurepoint": name,
            "table": "holding",
            "address": address,
            "type": "uint16",
            "quality": quality,
        }
    )


def mapping(muting: Muting, *, rules: list[EventRule] | None = None) -> DeviceMapping:
    points = [point("a", 0, quality=True), point("b", 1), point("alarm", 2)]
    return DeviceMapping("d", points, rules or [], muting, default_interval=1.0)


def alarm_rule() -> EventRule:
    return BitRule(event="alarm_on", rule="bit_set", point="alarm")


def test_good_blocks_pass_as_blocks_failed_points_as_bad_samples() -> None:
    """A finite response in point order is one block; a failed quality point is BAD with
    its last good value; a failed plain point says nothing."""
    stage = mapping(Muting())
    first = stage.read([Block((0, 1, 2), ("a", "b", "alarm"), [5, 6, 0], (), 1000)], [])
    assert first.blocks == [SampleBlock("d", ("a", "b", "alarm"), [5, 6, 0], 1000)]
    assert (first.samples, first.events) == ([], [])
    second = stage.read([], [Failed(0, 2000), Failed(1, 2000)])
    assert second.samples == [Sample("d", "a", 5, 2000, Quality.BAD)]


def test_not_read_points_go_stale_once_their_interval_passed() -> None:
    """Not attempted: STALE with the last good value, only after the point's interval."""
    stage = mapping(Muting())
    stage.read([Block((0,), ("a",), [7], (), 1000)], [])
    assert stage.not_read([0], 1900).samples == []
    assert stage.not_read([0], 2500).samples == [Sample("d", "a", 7, 2500, Quality.STALE)]


def test_event_rules_fire_once_per_transition() -> None:
    """bit_set fires on the rising read, with that read's time, and not again while set."""
    stage = mapping(Muting(), rules=[alarm_rule()])
    outs = [
        stage.read([Block((2,), ("alarm",), [v], (), ts)], [])
        for v, ts in ((0, 1000), (1, 2000), (1, 3000))
    ]
    assert [o.events for o in outs] == [
        [],
        [Event("d", "alarm_on", 2000, {"measurepoint": "alarm", "value": 1})],
        [],
    ]


def test_muted_device_emits_nothing_but_keeps_its_state() -> None:
    """Muted: no samples, blocks or events; its rule state still follows the reads, so an
    alarm raised while muted does not fire again when the device is unmuted."""
    muting = Muting()
    stage = mapping(muting, rules=[alarm_rule()])
    muting.disable("d")
    muted = stage.read([Block((0, 2), ("a", "alarm"), [1, 1], (), 1000)], [Failed(1, 1000)])
    assert (muted.samples, muted.blocks, muted.events) == ([], [], [])
    assert stage.not_read([0], 9000).samples == []
    muting.enable("d")
    after = stage.read([Block((0, 2), ("a", "alarm"), [1, 1], (), 10_000)], [])
    assert after.events == []
    assert after.blocks == [SampleBlock("d", ("a", "alarm"), [1, 1], 10_000)]


def test_muting_delete_outlasts_enable_until_forgotten() -> None:
    """disable/enable toggle; a delete holds through enable; forget (new keys) clears it."""
    muting = Muting()
    muting.disable("x")
    assert muting.publishing("x") is False
    muting.enable("x")
    assert muting.publishing("x") is True
    muting.delete("x")
    muting.enable("x")
    assert (muting.publishing("x"), muting.publishing("y")) == (False, True)
    muting.forget(["x"])
    assert muting.publishing("x") is True


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_poller_leaves_mapping_to_the_mapping_stage() -> None:
    """modbus/ reads only: no module there uses the mapper or the event rules directly."""
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(
            m for m in _imports(path) if m in {"gatewayd.mapping.mapper", "gatewayd.mapping.events"}
        )
        for path in (PACKAGE / "modbus").glob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_daemon_does_not_mute_a_second_time() -> None:
    """app.py asks no sub-device registry whether to drop output: muting is the stage's."""
    source = (PACKAGE / "app.py").read_text()
    assert ".wanted" not in source
    assert "Muting" in source
