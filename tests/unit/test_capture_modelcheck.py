"""The model check knows a captured event also sends its file parameter."""

from __future__ import annotations

from gatewayd.config.models import DeviceModel
from gatewayd.uplink.modelcheck import CloudModel, check_model

MODEL = DeviceModel.model_validate({
    "name": "m",
    "points": [
        {"measurepoint": "p", "table": "input", "address": 0, "type": "float32"},
        {"measurepoint": "trip", "table": "coil", "address": 0, "type": "bool"},
    ],
    "events": [{"event": "tripRecord", "rule": "bit_set", "point": "trip",
                "capture": {"points": ["p"], "before": "1s", "after": "1s", "param": "record"}}],
})  # fmt: skip


def mismatches(params: list[str]) -> list[str]:
    cloud = CloudModel.parse(
        {
            "tslMeasurepointMap": {"p": {}, "trip": {}},
            "tslEventMap": {"tripRecord": {"outputData": params}},
        }
    )
    assert cloud is not None
    return [m.message for m in check_model(MODEL, cloud)]


def test_a_cloud_event_without_the_file_parameter_is_a_mismatch() -> None:
    """The cloud's event lacks `record`: named; with it, the models match."""
    assert mismatches(["measurepoint", "value"]) == [
        "event 'tripRecord' sends parameters the cloud model lacks: record"
    ]
    assert mismatches(["measurepoint", "value", "record"]) == []
