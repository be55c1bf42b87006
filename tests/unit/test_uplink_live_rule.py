"""The live/backlog boundary on a virtual clock: a sample is live only if its sub-device was
logged in on this session when it was taken, and it is inside the live window."""

from __future__ import annotations

from typing import Any

from gatewayd.clock import VirtualClock
from gatewayd.config.models import Config
from gatewayd.enos.ids import IdGenerator
from gatewayd.spool.rows import SpooledFrame
from gatewayd.uplink.delivery import Delivery, DeliveryStats
from gatewayd.uplink.records import Bundle
from gatewayd.uplink.subdevices import SubDevice, SubDeviceRegistry

WINDOW_MS = 30_000


def delivery(clock: VirtualClock, registry: SubDeviceRegistry) -> Delivery:
    config = Config.model_validate(
        {
            "gateway": {
                "product_key": "gwPK",
                "device_key": "gwDK",
                "device_secret": "s",
                "broker": {"host": "127.0.0.1"},
            },
            "spool": {"path": "/nonexistent/spool.db"},
            "uplink": {"live_window": "30s"},
        }
    )
    unused: Any = None  # the boundary never touches the spool or the session
    return Delivery(
        config,
        unused,
        unused,
        registry,
        clock=clock,
        ids=IdGenerator(1),
        request_login=lambda: None,
        stats=DeliveryStats(),
    )


def bundle(device: str, ts_ms: int) -> Bundle:
    return Bundle(SpooledFrame(1, device, ts_ms, 1, '{"p":1}'), b"")


def now_ms(clock: VirtualClock) -> int:
    return int(clock.time() * 1000)


async def test_nothing_is_live_before_a_login_and_then_only_from_the_login_on() -> None:
    """No device logged in: the boundary is now. After a login 5 s later: the login time,
    though the live window reaches back 30 s."""
    clock = VirtualClock()
    a, b = SubDevice("a", "pk", "a", "s"), SubDevice("b", "pk", "b", "s")
    live = delivery(clock, SubDeviceRegistry([a, b]))
    start = now_ms(clock)
    assert live._live_cutoff_ms() == start
    await clock.advance(5.0)
    a.logged_in(now_ms(clock))
    b.logged_in(now_ms(clock) + 200)
    assert live._live_cutoff_ms() == start + 5_000  # the earliest login, not now - 30 s
    assert not live._takes_live(bundle("a", start + 4_999))
    assert live._takes_live(bundle("a", start + 5_000))
    assert not live._takes_live(bundle("b", start + 5_100))  # before b's own login
    assert live._takes_live(bundle("b", start + 5_200))
    await clock.advance(60.0)  # the window, not the login, bounds it now
    assert live._live_cutoff_ms() == now_ms(clock) - WINDOW_MS


async def test_a_relogin_makes_the_gap_offline_and_the_boundary_never_moves_back() -> None:
    """b is refused (1212) and logged in again later: its samples in between go by resume;
    the boundary does not move back when b's login is the later one."""
    clock = VirtualClock()
    a, b = SubDevice("a", "pk", "a", "s"), SubDevice("b", "pk", "b", "s")
    live = delivery(clock, SubDeviceRegistry([a, b]))
    login = now_ms(clock)
    a.logged_in(login)
    b.logged_in(login)
    assert live._live_cutoff_ms() == login
    await clock.advance(10.0)
    b.online = False  # EnOS refused b's data: it waits for a new login
    offline_sample = now_ms(clock)
    assert live._live_cutoff_ms() == login
    assert not live._takes_live(bundle("b", offline_sample))
    await clock.advance(3.0)
    b.logged_in(now_ms(clock))
    assert live._live_cutoff_ms() == login
    assert not live._takes_live(bundle("b", offline_sample))
    assert live._takes_live(bundle("b", now_ms(clock)))
    assert live._takes_live(bundle("a", offline_sample))
    a.online = b.online = False  # the connection is lost
    assert live._live_cutoff_ms() == now_ms(clock)
    a.logged_in(now_ms(clock) + 1)
    assert live._live_cutoff_ms() == now_ms(clock) + 1
