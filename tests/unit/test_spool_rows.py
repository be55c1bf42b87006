"""Spool value encoding and byte budget: pure parts, checked against a real SQLite column."""

from __future__ import annotations

import math
import sqlite3

import pytest

from gatewayd.spool.budget import SLACK_BYTES, Budget
from gatewayd.spool.rows import decode_value, encode_value

VALUES = [
    True,
    False,
    0,
    1,
    -1,
    (1 << 63) - 1,
    -(1 << 63),
    1 << 63,
    (1 << 64) - 1,
    -(1 << 63) - 1,
    0.0,
    -2.5,
    1e300,
    math.inf,
    -math.inf,
    "",
    "text",
    "1",
    "ünïcode",
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_value_survives_a_sqlite_column_with_its_type(value: object) -> None:
    """Every point value comes back from an untyped SQLite column equal and of the same type."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (value)")
    conn.execute("INSERT INTO t VALUES (?)", (encode_value(value),))  # type: ignore[arg-type]
    (stored,) = conn.execute("SELECT value FROM t").fetchone()
    back = decode_value(stored)
    assert back == value
    assert type(back) is type(value)


def test_nan_survives_a_sqlite_column() -> None:
    """NaN (which SQLite would turn into NULL) comes back as a float NaN."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (value)")
    conn.execute("INSERT INTO t VALUES (?)", (encode_value(math.nan),))
    (stored,) = conn.execute("SELECT value FROM t").fetchone()
    back = decode_value(stored)
    assert isinstance(back, float)
    assert math.isnan(back)


def test_plain_values_are_stored_natively() -> None:
    """Ints, floats and strings in range are not re-encoded (compact rows, no parsing)."""
    for value in (7, 2.5, "x"):
        assert encode_value(value) is value
    assert encode_value(True) == b"\x01"
    assert encode_value(1 << 64) == b"18446744073709551616"


@pytest.mark.parametrize("max_bytes", [1 << 20, 4 << 20, 64 << 20, 256 << 20, 4 << 30])
def test_budget_parts_fit_inside_the_cap(max_bytes: int) -> None:
    """Data pages, twice the WAL limit, the slack and the reserve fit in the cap."""
    budget = Budget(max_bytes)
    assert budget.data_high + 2 * budget.wal_limit + SLACK_BYTES + budget.reserve_bytes <= max_bytes
    assert 0 < budget.low_water < budget.data_high
    assert budget.wal_autocheckpoint_pages * budget.page_size == budget.wal_limit
    assert budget.vacuum_step_pages >= 16


def test_budget_wal_limit_is_clamped() -> None:
    """The WAL limit is 1/16 of the cap, between 64 KiB and 4 MiB."""
    assert Budget(1 << 20).wal_limit == 64 << 10
    assert Budget(32 << 20).wal_limit == 2 << 20
    assert Budget(1 << 30).wal_limit == 4 << 20
