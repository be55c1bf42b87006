"""The one backoff policy: ceilings, jitter bounds, and the settings each user picks."""

from __future__ import annotations

import random

from gatewayd.backoff import Backoff
from gatewayd.enos.reconnect import EQUAL_JITTER
from gatewayd.modbus.backoff import DEVICE_BACKOFF, bus_backoff
from gatewayd.uplink.delivery import RETRY_BACKOFF


def test_ceilings_double_up_to_the_cap_and_survive_long_outages() -> None:
    """1, 2, 4 ... capped; a ten-thousandth failure neither overflows nor exceeds the cap."""
    backoff = Backoff(initial=1.0, maximum=20.0)
    assert [backoff.ceiling(n) for n in range(8)] == [1, 1, 2, 4, 8, 16, 20, 20]
    assert backoff.ceiling(10_000) == 20.0


def test_jitter_only_shortens_by_at_most_its_share() -> None:
    """Every jittered delay lies in [(1 - jitter) * ceiling, ceiling]; they are spread."""
    rng = random.Random(11)
    backoff = Backoff(initial=8.0, maximum=8.0, jitter=EQUAL_JITTER)
    delays = [backoff.delay(1, rng) for _ in range(500)]
    assert all(4.0 <= d <= 8.0 for d in delays)
    assert min(delays) < 4.5  # the whole range is used
    assert max(delays) > 7.5


def test_no_random_source_means_no_jitter() -> None:
    """Without an rng the delay is the ceiling itself, whatever the jitter setting."""
    assert [Backoff(initial=0.5, maximum=2.0).delay(n, None) for n in (1, 2, 3, 4)] == [
        0.5,
        1.0,
        2.0,
        2.0,
    ]


def test_settings_of_each_user() -> None:
    """Devices 1 s to 5 min, buses 0.5 s to their reconnect_max, uplink retries 1 s to 30 s."""
    assert (DEVICE_BACKOFF.ceiling(1), DEVICE_BACKOFF.ceiling(20)) == (1.0, 300.0)
    assert (bus_backoff(10.0).ceiling(1), bus_backoff(10.0).ceiling(9)) == (0.5, 10.0)
    assert bus_backoff(0.2).ceiling(1) == 0.2
    assert [RETRY_BACKOFF.delay(n, random.Random(1)) for n in range(1, 8)] == [
        1,
        2,
        4,
        8,
        16,
        30,
        30,
    ]
