"""The emulator's CONNECT checks read what the gateway's credentials builder writes (§1.2-1.5)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatewayd.enos import sign as product_sign
from gatewayd.enos.sign import SIGN_METHOD_DIGESTS, login_sign_params, mqtt_credentials
from gatewayd.sim.emulator.credentials import (
    MalformedClientId,
    parse_mqtt_client_id,
    verify_sign,
)
from tests.unit.test_enos_sign import DOCS_MD5, DOCS_PARAMS, DOCS_SECRET, DOCS_SHA1, DOCS_SHA256


def test_verify_sign_is_case_insensitive() -> None:
    """Upper- and lower-case hex both verify; wrong signs, secrets and methods don't."""
    assert verify_sign(DOCS_PARAMS, DOCS_SECRET, "sha256", DOCS_SHA256.upper())
    assert verify_sign(DOCS_PARAMS, DOCS_SECRET, "hmacSha256", DOCS_SHA256)
    assert verify_sign(DOCS_PARAMS, DOCS_SECRET, "sha1", DOCS_SHA1.lower())
    assert verify_sign(DOCS_PARAMS, DOCS_SECRET, "md5", DOCS_MD5.upper())
    assert not verify_sign(DOCS_PARAMS, DOCS_SECRET, "sha1", DOCS_SHA256)
    assert not verify_sign(DOCS_PARAMS, "other", "sha256", DOCS_SHA256)
    assert not verify_sign(DOCS_PARAMS, DOCS_SECRET, "sha512", DOCS_SHA256)
    assert not verify_sign(DOCS_PARAMS, DOCS_SECRET, "sha256", "")
    assert not verify_sign(DOCS_PARAMS, DOCS_SECRET, "sha256", "ä" * 64)


def test_parse_client_id_sdk_form() -> None:
    """The SDK clientId splits into identifier and parameters."""
    ident, params = parse_mqtt_client_id(
        "gwDK|securemode=2,signmethod=sha256,timestamp=1700000000000|"
    )
    assert ident == "gwDK"
    assert params == {"securemode": "2", "signmethod": "sha256", "timestamp": "1700000000000"}


def test_parse_client_id_tolerates_spaces_extra_keys_and_java_info_block() -> None:
    """Spaces, extra keys, upper-case names, a missing final '|' and JAVA's {..} block pass."""
    ident, params = parse_mqtt_client_id(
        "dk{ip=10.0.0.5,version=2.3.0}|securemode=2, SignMethod = hmacsha256 ,timestamp=1,gw=1,,"
    )
    assert ident == "dk{ip=10.0.0.5,version=2.3.0}"
    assert params == {"securemode": "2", "signmethod": "hmacsha256", "timestamp": "1", "gw": "1"}


@pytest.mark.parametrize(
    "bad",
    ["gwDK", "|securemode=2|", "gwDK|securemode|", "gwDK|=2|", "a|b=1|c=2|"],
)
def test_parse_client_id_rejects_malformed(bad: str) -> None:
    """No parameter section, empty identifier, or a bare name are malformed."""
    with pytest.raises(MalformedClientId):
        parse_mqtt_client_id(bad)


@given(
    # MQTT strings are UTF-8: lone surrogates (category Cs) cannot occur on the wire.
    pk=st.text(
        alphabet=st.characters(blacklist_characters="|,=&", blacklist_categories=("Cs",)),
        min_size=1,
        max_size=12,
    ),
    dk=st.text(
        alphabet=st.characters(blacklist_characters="|,=&", blacklist_categories=("Cs",)),
        min_size=1,
        max_size=12,
    ),
    ts=st.from_regex(r"\A[0-9]{1,13}(\.[0-9]{1,3})?\Z"),
    secret=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20),
    method=st.sampled_from(sorted(SIGN_METHOD_DIGESTS)),
)
def test_credentials_round_trip_through_parser(
    pk: str, dk: str, ts: str, secret: str, method: str
) -> None:
    """What mqtt_credentials builds, the parser + verify_sign accept (the emulator's path)."""
    creds = mqtt_credentials(pk, dk, secret, timestamp=ts, method=method)
    ident, params = parse_mqtt_client_id(creds.client_id)
    assert ident == dk
    assert params["securemode"] == "2"
    assert params["timestamp"] == ts
    user_dk, _, user_pk = creds.username.partition("&")
    sign_params = login_sign_params(user_pk, user_dk, ident, params["timestamp"])
    assert verify_sign(sign_params, secret, params["signmethod"], creds.password)


def test_the_product_sign_module_has_no_cloud_side() -> None:
    """verify_sign and parse_mqtt_client_id left gatewayd.enos.sign (the cloud's side)."""
    for name in ("verify_sign", "parse_mqtt_client_id", "MalformedClientId"):
        assert not hasattr(product_sign, name), name
