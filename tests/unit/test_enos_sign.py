"""The EnOS sign and CONNECT credentials against the spec's test vectors (§1.5, §3.1, §3.2)."""

from __future__ import annotations

import hashlib

import pytest

from gatewayd.enos.sign import (
    SIGN_METHOD_DIGESTS,
    UnknownSignMethod,
    digest_name,
    login_sign_params,
    mqtt_credentials,
    sign,
    sign_content,
)

DOCS_PARAMS = login_sign_params("KV315idW", "tPbZGCdmaE", "123456", "1548753362502")
DOCS_SECRET = "M3yy874uGY8INjEGddTR"
DOCS_SHA256 = "a3c438ddcb6eaa0cf07ad1c36655245ccdd67aa1917e4cc4eff57bf6f464abff"
DOCS_SHA1 = "E42C1186C3BFFE98E1EA8AB320CD800D579212AA"
DOCS_MD5 = "10af8dc95019a1fe05cd146a9e64778b"
GW_SHA256 = "ac05757b2d47058ce1474547fc3ee8ee568045237fcebfa314b52573c1df1f32"


def test_docs_vector_content_string() -> None:
    """The hashed string is sorted name+value pairs followed by the secret."""
    assert sign_content(DOCS_PARAMS, DOCS_SECRET) == (
        "clientId123456deviceKeytPbZGCdmaEproductKeyKV315idW"
        "timestamp1548753362502M3yy874uGY8INjEGddTR"
    )


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("sha256", DOCS_SHA256),
        ("hmacsha256", DOCS_SHA256),
        ("Sha256", DOCS_SHA256),
        ("hmacSha256", DOCS_SHA256),
        (" SHA256 ", DOCS_SHA256),
        ("sha1", DOCS_SHA1),
        ("hmacsha1", DOCS_SHA1),
        ("hmacSha1", DOCS_SHA1),
        ("md5", DOCS_MD5),
        ("hmacmd5", DOCS_MD5),
        ("HmacMD5", DOCS_MD5),
    ],
)
def test_docs_vector_every_alias(method: str, expected: str) -> None:
    """Every signmethod alias yields the spec's vector, in the SDK's hex case."""
    assert sign(DOCS_PARAMS, DOCS_SECRET, method) == expected


def test_forced_hex_case() -> None:
    """`uppercase` overrides the per-digest default case."""
    assert sign(DOCS_PARAMS, DOCS_SECRET, "sha256", uppercase=True) == DOCS_SHA256.upper()
    assert sign(DOCS_PARAMS, DOCS_SECRET, "sha1", uppercase=False) == DOCS_SHA1.lower()


def test_alias_table_covers_exactly_three_plain_digests() -> None:
    """All aliases map to plain sha256/sha1/md5 (no HMAC)."""
    assert set(SIGN_METHOD_DIGESTS.values()) == {"sha256", "sha1", "md5"}
    assert len(SIGN_METHOD_DIGESTS) == 6


def test_unknown_method_raises_with_name() -> None:
    """An unknown method names itself in the error."""
    with pytest.raises(UnknownSignMethod, match="sha512"):
        digest_name("sha512")


def test_sdk_style_gateway_vector_and_credentials() -> None:
    """The §1.5 gateway CONNECT: clientId, username and password exactly."""
    creds = mqtt_credentials("gwPK", "gwDK", "gwSecret", timestamp="1700000000000")
    assert creds.client_id == "gwDK|securemode=2,signmethod=sha256,timestamp=1700000000000|"
    assert creds.username == "gwDK&gwPK"
    assert creds.password == GW_SHA256


def test_sub_device_login_vector() -> None:
    """§3.1 sub-device login sign."""
    params = login_sign_params("subPK", "subDK", "subPKsubDK1700000000000", "1700000000000")
    assert sign_content(params, "subSecret") == (
        "clientIdsubPKsubDK1700000000000deviceKeysubDKproductKeysubPK"
        "timestamp1700000000000subSecret"
    )
    assert sign(params, "subSecret") == (
        "ea80be0fe7b355e0e81503984a215fd22ee15183c57c0e8f30823603e53635de"
    )


@pytest.mark.parametrize(
    ("dk", "secret", "expected"),
    [
        ("subDK1", "sec1", "2429e23575656d5e13dc2f3243f2d5d684bb4a3509e4dd8fbc5fab3e71df4e59"),
        ("subDK2", "sec2", "1bdc775ed51f98a4f6140530b60ae9ebe9b5d67e230bb1f80b4ea0370e22495b"),
    ],
)
def test_batch_login_vectors(dk: str, secret: str, expected: str) -> None:
    """§3.2 batch login: per-device sign over the shared clientId/timestamp."""
    params = login_sign_params("subPK", dk, "login.batch", "1700000000000")
    assert sign_content(params, secret) == (
        f"clientIdlogin.batchdeviceKey{dk}productKeysubPKtimestamp1700000000000{secret}"
    )
    assert sign(params, secret) == expected


def test_mode3_uses_device_key_and_product_secret() -> None:
    """Mode 3: clientId param = device key, signed with the product secret passed in."""
    creds = mqtt_credentials("pk", "dk", "prodSecret", timestamp="1", secure_mode=3)
    assert creds.client_id == "dk|securemode=3,signmethod=sha256,timestamp=1|"
    assert creds.username == "dk&pk"
    assert creds.password == sign(login_sign_params("pk", "dk", "dk", "1"), "prodSecret")


def test_mode4_integration_channel() -> None:
    """Mode 4: clientId = product key, username `%channel%&pk`."""
    creds = mqtt_credentials("pk", "%channel%", "prodSecret", timestamp="5", secure_mode=4)
    assert creds.client_id == "pk|securemode=4,signmethod=sha256,timestamp=5|"
    assert creds.username == "%channel%&pk"
    expected = hashlib.sha256(
        b"clientIdpkdeviceKey%channel%productKeypktimestamp5prodSecret"
    ).hexdigest()
    assert creds.password == expected


def test_mode4_requires_channel_device_key() -> None:
    """Mode 4 with a real device key is a configuration error."""
    with pytest.raises(ValueError, match="%channel%"):
        mqtt_credentials("pk", "dk", "s", timestamp="1", secure_mode=4)


def test_invalid_secure_mode_and_client_id() -> None:
    """Secure modes other than 2/3/4 and a '|' in the client id are rejected."""
    with pytest.raises(ValueError, match="secure mode"):
        mqtt_credentials("pk", "dk", "s", timestamp="1", secure_mode=1)
    with pytest.raises(ValueError, match=r"'\|'"):
        mqtt_credentials("pk", "dk", "s", timestamp="1", client_id="a|b")


def test_custom_client_id_and_method_are_sent_verbatim() -> None:
    """The clientId prefix and signmethod name go into the clientId as given."""
    creds = mqtt_credentials(
        "pk", "dk", "s", timestamp="1700000000000.123", method="hmacsha1", client_id="mac01"
    )
    assert creds.client_id == "mac01|securemode=2,signmethod=hmacsha1,timestamp=1700000000000.123|"
    params = login_sign_params("pk", "dk", "mac01", "1700000000000.123")
    assert creds.password == sign(params, "s", "sha1")
    assert creds.password.isupper()
