"""What every device of one model shares, compiled once when the pollers are built.

A device's reader, planner and mapping need tables derived from its model alone: the
points in order, each point's byte and word order, measurepoint → index, the points
without the quality field and the plans for each set of due points. Built per device, a
site of 200 meters of one 1000-point model held 200 identical copies of each (about 60 MiB
of B2's 233: an index dict, an order tuple and a plan-cache entry per point per device).
`Layouts` compiles one `ModelLayout` per model (and per byte/word order override and gap
fill, the only device and bus settings the tables depend on) and hands the same object to
every device using it.

What a device learns (holes, read limits, last values) stays per device: the shared plan
cache is keyed by holes and limits, so devices that learnt different things still get
their own plans. The compiled block decoders are the mapping stage's, shared per model
on that side (`mapping.decoding.SharedDecoders`, keyed by this layout's points and orders):
the Modbus layer does not import the mapping stage.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from gatewayd.config.enums import Order
from gatewayd.config.models import DeviceModel
from gatewayd.modbus import codec
from gatewayd.modbus.planner import PlanCache
from gatewayd.modbus.points import Point, compile_point
from gatewayd.modbus.specs import DeviceOrders

#: Plans kept per layout: each device asks for its own set of due points, holes and limits,
#: and devices of one model mostly ask for the same ones.
PLAN_CACHE_SIZE = 256


@dataclass(frozen=True, slots=True, eq=False)
class ModelLayout:
    """One model's points and everything derived from them alone; shared by its devices."""

    model: DeviceModel
    points: tuple[Point, ...]  # frozen specs compiled from the model's config points
    measurepoints: tuple[str, ...]
    #: (byte_order, word_order) of each point: point > device override > model.
    orders: tuple[tuple[Order, Order], ...]
    index_by_measurepoint: Mapping[str, int]
    #: index → measurepoint of the points without the quality field.
    unqualified: Mapping[int, str]
    plans: PlanCache

    @classmethod
    def compile(cls, model: DeviceModel, device: DeviceOrders, *, gap_fill: int) -> ModelLayout:
        """The layout of `model` for devices with `device`'s order overrides."""
        points = tuple(compile_point(p) for p in model.points)
        return cls(
            model=model,
            points=points,
            measurepoints=tuple(p.measurepoint for p in points),
            orders=tuple(_shared_orders(codec.point_orders(p, device, model)) for p in points),
            index_by_measurepoint=MappingProxyType(
                {p.measurepoint: i for i, p in enumerate(points)}
            ),
            unqualified=MappingProxyType(
                {i: p.measurepoint for i, p in enumerate(points) if not p.quality}
            ),
            plans=PlanCache(points, gap_fill=gap_fill, size=PLAN_CACHE_SIZE),
        )


class Layouts:
    """Compiles each model's layout once per order override and gap fill; hands it out."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[int, Order | None, Order | None, int], ModelLayout] = {}

    def of(self, model: DeviceModel, device: DeviceOrders, *, gap_fill: int) -> ModelLayout:
        """The shared layout for a device of `model` with `device`'s order overrides."""
        # By identity: the layout holds its model, so the id is not reused while cached.
        key = (id(model), device.byte_order, device.word_order, gap_fill)
        layout = self._by_key.get(key)
        if layout is None:
            layout = self._by_key[key] = ModelLayout.compile(model, device, gap_fill=gap_fill)
        return layout

    def __len__(self) -> int:
        return len(self._by_key)


_ORDER_PAIRS: dict[tuple[Order, Order], tuple[Order, Order]] = {}


def _shared_orders(pair: tuple[Order, Order]) -> tuple[Order, Order]:
    """One tuple object per distinct (byte, word) order pair (there are four)."""
    return _ORDER_PAIRS.setdefault(pair, pair)
