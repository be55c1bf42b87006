"""The mapping stage's capture hook: captures see every good reading, also those the
report filter holds back, and the captured event leaves the stage's output."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from gatewayd.config.models import BitRule, PointConfig
from gatewayd.mapping.capture import Action, Begin, CaptureSpec, DeviceCaptures
from gatewayd.mapping.muting import Muting
from gatewayd.mapping.report import ReportSpec
from gatewayd.mapping.stage import DeviceMapping
from gatewayd.samples import Event, Sample, SampleBlock, Value

T0 = 1_764_928_800_000  # 2025-12-05T10:00:00.000Z


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
class Hook:
    """The real capture core behind the stage's hook, keeping the file actions."""

    core: DeviceCaptures
    actions: list[Action] = field(default_factory=list)

    def take(
        self,
        samples: Sequence[Sample],
        blocks: Sequence[SampleBlock],
        events: list[Event],
        *,
        publishing: bool,
    ) -> list[Event]:
        kept, actions = self.core.take(samples, blocks, events, publishing=publishing)
        self.actions += actions
        return kept


def point(name: str, address: int) -> PointConfig:
    return PointConfig.model_validate(
        {"measurepoint": name, "table": "holding", "address": address, "type": "uint16"}
    )


def test_captures_see_readings_the_report_filter_holds_back() -> None:
    """`a` reports on change (deadband 100): its repeats never leave the stage, yet the
    capture has them in every row; the captured alarm is not in the stage's events."""
    spec = CaptureSpec("alarm_on", ("a",), before_ms=5000, after_ms=1000, param="record")
    hook = Hook(DeviceCaptures("d", {"alarm_on": spec}, {"a": 1000}))
    stage = DeviceMapping(
        "d",
        [point("a", 0), point("alarm", 1)],
        [BitRule(event="alarm_on", rule="bit_set", point="alarm")],
        Muting(),
        default_interval=1.0,
        reports={"a": ReportSpec(on_change=True, deadband=100.0, heartbeat_ms=3_600_000)},
        capture=hook,
    )
    sent_a = []
    events = []
    for second, alarm in enumerate((0, 0, 1)):
        ts = T0 + second * 1000
        output = stage.read([Block((0, 1), ("a", "alarm"), [5, alarm], (), ts)], [])
        sent_a += [b.ts_ms for b in output.blocks if "a" in b.measurepoints]
        sent_a += [s.ts_ms for s in output.samples if s.measurepoint == "a"]
        events += output.events
    assert sent_a == [T0]  # the filter sent the first reading only
    assert events == []
    (begin,) = hook.actions
    assert isinstance(begin, Begin)
    assert begin.text.splitlines() == [
        "time,a",
        "2025-12-05T10:00:00.000Z,5",
        "2025-12-05T10:00:01.000Z,5",
        "2025-12-05T10:00:02.000Z,5",
    ]
    assert begin.sidecar["params"] == {"measurepoint": "alarm", "value": 1}
