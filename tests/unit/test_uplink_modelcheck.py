"""The model check's pure core: lenient TSL parsing and what counts as a mismatch."""

from __future__ import annotations

from typing import Any

from gatewayd.config.models import DeviceConfig, DeviceModel
from gatewayd.uplink.modelcheck import CloudModel, check_model

MODEL = DeviceModel.model_validate({
    "name": "m",
    "points": [
        {"measurepoint": "v", "table": "input", "address": 0, "type": "float32", "quality": True},
        {"measurepoint": "n", "table": "input", "address": 2, "type": "uint16"},
        {"measurepoint": "s", "table": "input", "address": 3, "type": "uint16", "scale": 0.1},
        {"measurepoint": "mode", "table": "input", "address": 4, "type": "uint16",
         "enum": {0: "off", 1: "on"}},
    ],
    "events": [{"event": "trip", "rule": "change", "point": "n", "params": {"zone": "A"}}],
    "services": [{"id": "reset"}],
    "attributes": [{"attribute": "serial", "table": "holding", "address": 9, "type": "string",
                    "count": 2}],
})  # fmt: skip
DEVICE = DeviceConfig.model_validate({
    "name": "d", "bus": "b", "model": "m", "product_key": "pk", "device_key": "dk",
    "attributes": {"site": "N", "floors": 3},
})  # fmt: skip


def tsl(**over: Any) -> dict[str, Any]:
    """A cloud model matching MODEL, with `over` replacing whole maps."""
    data = {
        "tslMeasurepointMap": {
            "v": {"dataDefinition": {"dataType": "DOUBLE"}, "hasQuality": True},
            "n": {"dataDefinition": {"dataType": "INT"}},
            "s": {"dataType": "float"},
            "mode": {"dataDefinition": {"dataType": "ENUM"}},
        },
        "tslEventMap": {"trip": {"outputData": [{"identifier": "measurepoint"},
                                                {"identifier": "value"}, "zone"]}},
        "tslServiceMap": {"reset": {}},
        "tslAttributeMap": {"serial": {"dataDefinition": {"dataType": "TEXT"}},
                            "site": {}, "floors": {"dataType": "LONG"}},
    }  # fmt: skip
    data.update(over)
    return data


def messages(data: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    cloud = CloudModel.parse(data)
    assert cloud is not None
    return [(m.path, m.message) for m in check_model(MODEL, cloud, device=(0, DEVICE))]


def test_matching_models_have_no_mismatch() -> None:
    """Types read from dataDefinition.dataType or dataType, any case; params as names."""
    assert messages(tsl()) == []


def test_unknown_types_and_shapes_never_fail() -> None:
    """An entry without a readable type (or not even an object) means 'exists'."""
    odd = {"v": "?", "n": {"dataDefinition": 5}, "s": {"dataType": "QUATERNION"}, "mode": None}
    assert messages(tsl(tslMeasurepointMap=odd)) == []
    assert CloudModel.parse(["not", "an", "object"]) is None


def test_each_kind_of_mismatch_is_named_at_its_item() -> None:
    """Missing items, incompatible types, quality and event params, each at its path."""
    data = tsl(
        tslMeasurepointMap={"v": {"hasQuality": False}, "n": {"dataType": "TEXT"},
                            "s": {"dataType": "INT"}},
        tslEventMap={"trip": {"outputData": ["measurepoint", "value"]}},
        tslServiceMap={},
        tslAttributeMap={"serial": {"dataType": "INT"}, "floors": {"dataType": "TEXT"}},
    )  # fmt: skip
    assert messages(data) == [
        (("points", 0, "quality"), "measurepoint 'v' sends a quality but the cloud model has none"),
        (("points", 1, "measurepoint"),
         "measurepoint 'n' sends int values but the cloud model's type is string"),
        (("points", 2, "measurepoint"),
         "measurepoint 's' sends float values but the cloud model's type is int"),
        (("points", 3, "measurepoint"), "measurepoint 'mode' is not in the cloud model (withheld)"),
        (("events", 0, "event"), "event 'trip' sends parameters the cloud model lacks: zone"),
        (("attributes", 0, "attribute"),
         "attribute 'serial' sends string values but the cloud model's type is int"),
        (("services", 0, "id"), "service 'reset' is not in the cloud model"),
        (("devices", 0, "attributes", "site"), "attribute 'site' is not in the cloud model"),
        (("devices", 0, "attributes", "floors"),
         "attribute 'floors' sends int values but the cloud model's type is string"),
    ]  # fmt: skip


def test_a_map_the_reply_lacks_checks_nothing_of_its_kind() -> None:
    """`{}` (no maps at all) withholds nothing: absence of a map is not an empty model."""
    assert messages({}) == []
    assert messages(tsl(tslServiceMap=None)) == []
