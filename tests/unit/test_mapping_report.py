"""The mapping stage's report filter: blocks, samples, resends and rule precedence (pure)."""

from __future__ import annotations

from typing import Any

from gatewayd.config.models import BitRule, DeviceConfig, DeviceModel
from gatewayd.mapping.muting import Muting
from gatewayd.mapping.report import ALWAYS, ReportSpec, Resend
from gatewayd.mapping.stage import DeviceMapping, report_specs
from gatewayd.samples import Event, Quality, Sample, SampleBlock
from tests.unit.test_mapping_stage import Block, Failed, point

CHANGE = ReportSpec(on_change=True, deadband=0.0, heartbeat_ms=10_000)


def stage(resend: Resend | None = None, *, rules: bool = False) -> DeviceMapping:
    """Point a (quality) and b report on change, alarm always."""
    points = [point("a", 0, quality=True), point("b", 1), point("alarm", 2)]
    events = [BitRule(event="alarm_on", rule="bit_set", point="b")] if rules else []
    return DeviceMapping(
        "d",
        points,
        events,
        Muting(),
        default_interval=1.0,
        reports={"a": CHANGE, "b": CHANGE, "alarm": ALWAYS},
        resend=resend,
    )


def poll(s: DeviceMapping, values: list[int], ts: int) -> list[SampleBlock]:
    return s.read([Block((0, 1, 2), ("a", "b", "alarm"), values, (), ts)], []).blocks


def test_blocks_keep_only_the_points_that_changed() -> None:
    """An unchanged point leaves the block; a block with nothing left is dropped; the
    heartbeat sends it again; status counts polled and sent points."""
    s = stage()
    assert poll(s, [1, 2, 0], 1000) == [SampleBlock("d", ("a", "b", "alarm"), [1, 2, 0], 1000)]
    assert poll(s, [1, 3, 0], 2000) == [SampleBlock("d", ["b", "alarm"], [3, 0], 2000)]
    assert poll(s, [1, 3, 0], 3000) == [SampleBlock("d", ["alarm"], [0], 3000)]
    assert poll(s, [1, 3, 0], 11_000) == [SampleBlock("d", ["a", "alarm"], [1, 0], 11_000)]
    assert s.throughput.per_minute(11_000) == (12, 8)


def test_events_see_every_reading_and_are_never_filtered() -> None:
    """Events come with the output whatever the filter holds back (a filtered point's
    rule still fires once per transition)."""
    s = stage(rules=True)
    s.read([Block((0, 1, 2), ("a", "b", "alarm"), [1, 0, 0], (), 1000)], [])
    out = s.read([Block((0, 1, 2), ("a", "b", "alarm"), [1, 1, 0], (), 2000)], [])
    assert out.events == [Event("d", "alarm_on", 2000, {"measurepoint": "b", "value": 1})]
    assert out.blocks == [SampleBlock("d", ["b", "alarm"], [1, 0], 2000)]
    again = s.read([Block((0, 1, 2), ("a", "b", "alarm"), [1, 1, 0], (), 3000)], [])
    assert again.events == []


def test_quality_changes_pass_and_a_failed_plain_point_is_resent() -> None:
    """a goes BAD and back (both sent); b (no quality field) failed, so its unchanged
    next reading is sent anyway."""
    s = stage()
    poll(s, [1, 2, 0], 1000)
    failed = s.read([Block((2,), ("alarm",), [0], (), 2000)], [Failed(0, 2000), Failed(1, 2000)])
    assert failed.samples == [Sample("d", "a", 1, 2000, Quality.BAD)]
    assert poll(s, [1, 2, 0], 3000) == [SampleBlock("d", ("a", "b", "alarm"), [1, 2, 0], 3000)]


def test_not_read_points_without_quality_are_resent_when_read_again() -> None:
    """A device backing off (points not read) sends every unchanged point when it answers."""
    s = stage()
    poll(s, [1, 2, 0], 1000)
    s.not_read([0, 1, 2], 1500)
    assert poll(s, [1, 2, 0], 2000) == [SampleBlock("d", ["b", "alarm"], [2, 0], 2000)]


def test_resend_signals_reset_the_filter() -> None:
    """`Resend.all` (uplink session, spool loss) and `Resend.device` (combine.enable)."""
    resend = Resend()
    s, other = stage(resend), stage(resend)
    other.device = "e"
    for x in (s, other):
        poll(x, [1, 2, 0], 1000)
    resend.all()
    assert poll(s, [1, 2, 0], 2000)[0].points == 3
    assert poll(other, [1, 2, 0], 2000)[0].points == 3
    assert poll(s, [1, 2, 0], 3000)[0].points == 1
    resend.device("d")
    assert poll(other, [1, 2, 0], 4000)[0].points == 1
    assert poll(s, [1, 2, 0], 4000)[0].points == 3


def _model(report: dict[str, Any] | None, point_report: dict[str, Any] | None) -> DeviceModel:
    points: list[dict[str, Any]] = [
        {"measurepoint": "p", "table": "holding", "address": 0, "type": "float32"},
        {"measurepoint": "q", "table": "holding", "address": 2, "type": "float32"},
    ]
    if point_report is not None:
        points[1]["report"] = point_report
    data: dict[str, Any] = {"name": "m", "points": points}
    if report is not None:
        data["report"] = report
    return DeviceModel.model_validate(data)


def _device(**extra: Any) -> DeviceConfig:
    return DeviceConfig.model_validate(
        {"name": "d", "bus": "b", "model": "m", "product_key": "k", "device_key": "k", **extra}
    )


def test_the_most_specific_report_rule_wins() -> None:
    """Site per-point > site device > model point > model default > always."""
    assert report_specs(_device(), _model(None, None)) == {"p": ALWAYS, "q": ALWAYS}
    model = _model({"on": "change", "deadband": 1}, {"on": "change", "deadband": "2%"})
    specs = report_specs(_device(), model)
    assert specs["p"] == ReportSpec(on_change=True, deadband=1.0, heartbeat_ms=900_000)
    assert specs["q"] == ReportSpec(on_change=True, percent=2.0, heartbeat_ms=900_000)
    device = _device(
        report={"on": "change", "deadband": 0.5, "heartbeat": "15m"},
        point_reports={"q": {"on": "always"}},
    )
    specs = report_specs(device, model)
    assert specs == {"p": ReportSpec(True, 0.5, None, 900_000), "q": ALWAYS}
    assert specs["p"].describe() == "change ±0.5 hb 900s"
