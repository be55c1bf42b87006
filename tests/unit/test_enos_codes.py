"""EnOS reply codes: every code of spec §4/§3.7 is named and classified per the retry column."""

from __future__ import annotations

import pytest

from gatewayd.enos.codes import Disposition, ReplyCode, classify, describe

# Every code in the spec (§4 table, SDK families, PY ResponseCode, §3.7 command codes).
SPEC_CODES = {
    200: Disposition.SUCCESS,
    1008: Disposition.SPLIT,
    1009: Disposition.RELOGIN,
    1220: Disposition.PERMANENT,
    1251: Disposition.PERMANENT,
    1260: Disposition.PERMANENT,
    705: Disposition.PERMANENT,
    723: Disposition.PERMANENT,
    740: Disposition.PERMANENT,
    742: Disposition.PERMANENT,
    746: Disposition.PERMANENT,
    770: Disposition.PERMANENT,
    771: Disposition.PERMANENT,
    702: Disposition.PERMANENT,
    714: Disposition.RETRY,
    739: Disposition.PERMANENT,
    1255: Disposition.PERMANENT,
    1256: Disposition.PERMANENT,
    1200: Disposition.PERMANENT,
    1204: Disposition.PERMANENT,
    1206: Disposition.PERMANENT,
    1207: Disposition.PERMANENT,
    1208: Disposition.PERMANENT,
    1209: Disposition.PERMANENT,
    1212: Disposition.RELOGIN,
    1257: Disposition.PERMANENT,
    600: Disposition.PERMANENT,
    700: Disposition.PERMANENT,
    800: Disposition.PERMANENT,
    900: Disposition.PERMANENT,
    1000: Disposition.RETRY,
    1100: Disposition.PERMANENT,
    400: Disposition.RETRY,
    401: Disposition.PERMANENT,
    402: Disposition.PERMANENT,
    429: Disposition.RETRY,
    460: Disposition.PERMANENT,
    500: Disposition.RETRY,
    6205: Disposition.RETRY,
    6207: Disposition.PERMANENT,
    6305: Disposition.RETRY,
    10001: Disposition.PERMANENT,
    100000: Disposition.PERMANENT,
    1101: Disposition.PERMANENT,
    1102: Disposition.PERMANENT,
    2000: Disposition.PERMANENT,
}


@pytest.mark.parametrize(("code", "disposition"), sorted(SPEC_CODES.items()))
def test_every_spec_code_is_named_and_classified(code: int, disposition: Disposition) -> None:
    """Each spec code has a ReplyCode member and the §4 disposition."""
    assert ReplyCode(code) == code
    assert classify(code) is disposition
    assert describe(code) == f"{code} {ReplyCode(code).name}"


@pytest.mark.parametrize(
    ("code", "disposition"),
    [
        (1050, Disposition.RETRY),  # transport family
        (503, Disposition.RETRY),
        (1299, Disposition.PERMANENT),  # validation family
        (777, Disposition.PERMANENT),
        (3000, Disposition.PERMANENT),  # device-defined
        (0, Disposition.RETRY),  # nobody knows: keep the data
        (-1, Disposition.RETRY),
        (1500, Disposition.RETRY),
    ],
)
def test_undocumented_codes_fall_back_by_family(code: int, disposition: Disposition) -> None:
    """Undocumented codes: validation families are permanent, anything else is retried."""
    assert classify(code) is disposition


def test_describe_undocumented() -> None:
    """Unknown codes are labelled, not rejected."""
    assert describe(4242) == "4242 (undocumented)"


def test_gatewayd_command_codes_are_user_defined_range() -> None:
    """gatewayd's own command error codes follow the SDK rule (>= 2000)."""
    own = [c for c in ReplyCode if c.name.startswith(("COMMAND_", "POINT_", "VALUE_", "DEVICE_W"))]
    assert own
    assert all(
        c >= 2000
        for c in own
        if c.name not in ("COMMAND_HANDLER_NOT_REGISTERED", "COMMAND_HANDLER_FAILED")
    )
    assert len({int(c) for c in ReplyCode}) == len(list(ReplyCode))
