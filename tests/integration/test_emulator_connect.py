"""EnOS CONNECT verification of the emulator: credentials, secure modes, CONNACK 4/5, throttle."""

from __future__ import annotations

import hashlib

import pytest

from gatewayd.enos import messages, topics
from gatewayd.enos.sign import mqtt_credentials
from gatewayd.sim.emulator import EnosEmulator
from tests.integration.emulator_fixtures import (
    GW_DK,
    GW_PK,
    GW_SECRET,
    TIMESTAMP,
    EmulatorFactory,
    connack_code,
    connect_code,
    connect_device,
    default_emulator_config,
)
from tests.support import async_wait_until


def _password(content: str, algo: str) -> str:
    return hashlib.new(algo, content.encode()).hexdigest()


@pytest.mark.parametrize(
    ("method", "uppercase"),
    [
        ("sha256", False),
        ("sha256", True),
        ("hmacsha256", False),
        ("Sha256", True),
        ("hmacSha256", False),
        ("sha1", True),
        ("hmacsha1", False),
        ("md5", False),
        ("hmacmd5", True),
    ],
)
async def test_connect_accepts_every_sign_method_alias_in_either_hex_case(
    enos_emulator: EnosEmulator, method: str, uppercase: bool
) -> None:
    """Mode 2 CONNECT is accepted for every signmethod alias, hex compared case-insensitively."""
    code = await connect_code(
        enos_emulator, GW_PK, GW_DK, GW_SECRET, method=method, uppercase=uppercase
    )
    assert code == 0
    assert enos_emulator.stats.connects == 1


async def test_connect_matches_the_documented_vector(enos_emulator: EnosEmulator) -> None:
    """The spec's §1.5 gateway example (built by hand, not by our codec) is accepted."""
    content = f"clientId{GW_DK}deviceKey{GW_DK}productKey{GW_PK}timestamp{TIMESTAMP}{GW_SECRET}"
    password = _password(content, "sha256")
    assert password == "ac05757b2d47058ce1474547fc3ee8ee568045237fcebfa314b52573c1df1f32"
    client_id = f"{GW_DK}|securemode=2,signmethod=sha256,timestamp={TIMESTAMP}|"
    assert await connack_code(enos_emulator, client_id, f"{GW_DK}&{GW_PK}", password) == 0


async def test_client_id_tolerates_spaces_and_extra_keys(enos_emulator: EnosEmulator) -> None:
    """Spaces and extra clientId parameters (JAVA's info block style) are tolerated."""
    ident = "gw{ip=10.0.0.5}"
    content = f"clientId{ident}deviceKey{GW_DK}productKey{GW_PK}timestamp{TIMESTAMP}{GW_SECRET}"
    client_id = f"{ident}|securemode=2, signmethod=sha256, timestamp={TIMESTAMP},gzip=1|"
    code = await connack_code(
        enos_emulator, client_id, f"{GW_DK}&{GW_PK}", _password(content, "sha256")
    )
    assert code == 0


@pytest.mark.parametrize(
    ("client_id", "username", "password"),
    [
        (f"{GW_DK}", f"{GW_DK}&{GW_PK}", "x"),  # no | section
        (f"|securemode=2,signmethod=sha256,timestamp={TIMESTAMP}|", f"{GW_DK}&{GW_PK}", "x"),
        (f"{GW_DK}|signmethod=sha256,timestamp={TIMESTAMP}|", f"{GW_DK}&{GW_PK}", "x"),
        (f"{GW_DK}|securemode=2,timestamp={TIMESTAMP}|", f"{GW_DK}&{GW_PK}", "x"),
        (f"{GW_DK}|securemode=2,signmethod=sha256|", f"{GW_DK}&{GW_PK}", "x"),
        (f"{GW_DK}|securemode=7,signmethod=sha256,timestamp=1|", f"{GW_DK}&{GW_PK}", "x"),
        (f"{GW_DK}|securemode=2,signmethod=sha512,timestamp=1|", f"{GW_DK}&{GW_PK}", "x"),
        (f"{GW_DK}|securemode=2,signmethod=sha256,timestamp=1|", f"{GW_PK}", "x"),
        (f"{GW_DK}|securemode=2,signmethod=sha256,timestamp=1|", None, None),
    ],
)
async def test_malformed_credentials_are_refused_with_4(
    enos_emulator: EnosEmulator, client_id: str, username: str | None, password: str | None
) -> None:
    """Malformed clientId/username, unknown securemode or signmethod: CONNACK 4."""
    assert await connack_code(enos_emulator, client_id, username, password) == 4
    assert enos_emulator.stats.refused_by_code == {4: 1}


async def test_unknown_device_and_bad_sign_are_refused_with_4(enos_emulator: EnosEmulator) -> None:
    """Unknown device, unknown product and a wrong secret all give CONNACK 4."""
    assert await connect_code(enos_emulator, GW_PK, "nope", GW_SECRET) == 4
    assert await connect_code(enos_emulator, "noPK", GW_DK, GW_SECRET) == 4
    assert await connect_code(enos_emulator, GW_PK, GW_DK, "wrongSecret") == 4
    assert enos_emulator.stats.refused_connects == 3
    assert enos_emulator.stats.connects == 0


@pytest.mark.parametrize(
    ("pk", "dk", "secret", "why"),
    [
        ("directPK", "disabledDev", "disSecret", "disabled device"),
        ("sslPK", "sslDev", "sslSecret", "ssl-only product on the plain port"),
        ("subPK", "meter1", "m1Secret", "sub-device product connecting directly"),
    ],
)
async def test_not_authorized_cases_are_refused_with_5(
    enos_emulator: EnosEmulator, pk: str, dk: str, secret: str, why: str
) -> None:
    """Disabled device, ssl-only product, sub-device-only product: CONNACK 5."""
    assert await connect_code(enos_emulator, pk, dk, secret) == 5, why


async def test_dynamic_activation_once_then_device_secret(
    enos_emulator_factory: EmulatorFactory,
) -> None:
    """Mode 3 connects once, pushes thing.activate.info unsubscribed; then only mode 2 works."""
    emu = await enos_emulator_factory(
        default_emulator_config(), secret_factory=lambda key: f"issued-{key[1]}"
    )
    async with connect_device(emu, "dynPK", "newGw", "dynProductSecret", secure_mode=3) as dev:
        topic, body = await dev.next_message()
        assert topic == topics.activate_info("dynPK", "newGw")
        assert body["method"] == "thing.activate.info"
        assert body["params"]["deviceSecret"] == "issued-newGw"
        assert body["params"]["productKey"] == "dynPK"
        assert body["params"]["deviceKey"] == "newGw"
        assert body["params"]["assetId"] == emu.state.devices[("dynPK", "newGw")].asset_id
        await dev.publish(
            topic + "_reply", {"id": body["id"], "code": 200, "data": None, "message": "ok"}
        )
        # Exactly one activation message: a round trip later, nothing else has arrived.
        post = messages.measurepoint_post("dynPK", "newGw", id="p", measurepoints={}, time_ms=1)
        assert (await dev.send(post))["code"] == 200
        assert dev.inbox.empty()
    # A second dynamic activation is refused; the issued secret works in mode 2.
    assert await connect_code(emu, "dynPK", "newGw", "dynProductSecret", secure_mode=3) == 5
    assert await connect_code(emu, "dynPK", "newGw", "issued-newGw") == 0
    # A product without dynamic activation refuses mode 3 outright.
    assert await connect_code(emu, "directPK", "dev1", "directProductSecret", secure_mode=3) == 5


async def test_integration_channel_mode_4(enos_emulator: EnosEmulator) -> None:
    """Mode 4: username %channel%&pk, clientId = pk, signed with the product secret."""
    code = await connect_code(
        enos_emulator, "directPK", "%channel%", "directProductSecret", secure_mode=4
    )
    assert code == 0
    assert await connect_code(enos_emulator, "directPK", "%channel%", "bad", secure_mode=4) == 4
    # Signed right, but with another clientId than the product key (§1.2): refused.
    creds = mqtt_credentials(
        "directPK", "%channel%", "directProductSecret", timestamp=TIMESTAMP, secure_mode=4,
        client_id="someDevice",
    )  # fmt: skip
    code = await connack_code(enos_emulator, creds.client_id, creds.username, creds.password)
    assert code == 4


async def test_connect_throttle_blocks_the_fifth_connect_for_five_minutes(
    enos_emulator_factory: EmulatorFactory,
) -> None:
    """More than 4 CONNECTs in 2 min are refused with 5 for 5 min (injected clock)."""
    now = [1000.0]
    emu = await enos_emulator_factory(default_emulator_config(), clock=lambda: now[0])
    for _ in range(4):
        assert await connect_code(emu, GW_PK, GW_DK, GW_SECRET) == 0
        now[0] += 10
    assert await connect_code(emu, GW_PK, GW_DK, GW_SECRET) == 5  # 5th within 2 min
    now[0] += 299
    assert await connect_code(emu, GW_PK, GW_DK, GW_SECRET) == 5  # still blocked
    assert await connect_code(emu, "directPK", "dev1", "dev1Secret") == 0  # per device
    now[0] += 2
    assert await connect_code(emu, GW_PK, GW_DK, GW_SECRET) == 0
    assert emu.stats.refused_by_code == {5: 2}


async def test_connects_spread_over_the_window_are_not_throttled(
    enos_emulator_factory: EmulatorFactory,
) -> None:
    """Attempts older than the 2-minute window do not count."""
    now = [0.0]
    emu = await enos_emulator_factory(default_emulator_config(), clock=lambda: now[0])
    for _ in range(10):
        assert await connect_code(emu, GW_PK, GW_DK, GW_SECRET) == 0
        now[0] += 31  # 4 attempts span 93 s; the 5th sees the first one expire
    assert emu.stats.connects == 10


async def test_throttle_can_be_switched_off(enos_emulator: EnosEmulator) -> None:
    """With the throttle off, a burst of connects is accepted."""
    enos_emulator.throttle.enabled = False
    for _ in range(8):
        assert await connect_code(enos_emulator, GW_PK, GW_DK, GW_SECRET) == 0


async def test_refuse_connects_fault(enos_emulator: EnosEmulator) -> None:
    """An armed refusal answers the next N CONNECTs with the chosen code, then recovers."""
    enos_emulator.faults.refuse_connects(2, return_code=3)
    assert await connect_code(enos_emulator, GW_PK, GW_DK, GW_SECRET) == 3
    assert await connect_code(enos_emulator, GW_PK, GW_DK, GW_SECRET) == 3
    assert await connect_code(enos_emulator, GW_PK, GW_DK, GW_SECRET) == 0


async def test_a_new_session_of_the_same_device_kicks_the_old_one(
    enos_emulator: EnosEmulator,
) -> None:
    """One session per device: a second connection (other MQTT clientId) replaces the first."""
    async with connect_device(enos_emulator, GW_PK, GW_DK, GW_SECRET, client_id="first"):
        await async_wait_until(lambda: enos_emulator.is_connected(GW_PK, GW_DK))
        async with connect_device(enos_emulator, GW_PK, GW_DK, GW_SECRET, client_id="second"):
            await async_wait_until(
                lambda: (
                    enos_emulator.connected_devices() == [(GW_PK, GW_DK)]
                    and enos_emulator.stats.disconnects == 1
                ),
                what="the first session to be dropped",
            )
