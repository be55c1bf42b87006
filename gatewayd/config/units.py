"""Durations (`5s`, `250ms`) and sizes (`64MiB`) with mandatory units.

A bare number is refused with a hint: `5` could mean seconds or milliseconds, and a
commissioning engineer should not have to guess which one the daemon picked.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, WithJsonSchema

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB)\s*$")
_SIZE_UNITS = {
    "B": 1,
    "KB": 1000,
    "KiB": 1 << 10,
    "MB": 1000**2,
    "MiB": 1 << 20,
    "GB": 1000**3,
    "GiB": 1 << 30,
}


# The raises below are ValueError on purpose (ruff TRY004 wants TypeError): pydantic turns
# only ValueError and AssertionError into located validation errors.


def parse_duration(value: object) -> float:
    """Seconds from `'5s'`, `'250ms'`, `'2m'`, `'1h'`; a bare number is an error with a hint."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '5s' or '250ms'")  # noqa: TRY004
    if isinstance(value, int | float):
        raise ValueError(f"duration {value!r} has no unit; did you mean '{value}s'?")  # noqa: TRY004
    if not isinstance(value, str):
        raise ValueError("expected a duration such as '5s' or '250ms'")  # noqa: TRY004
    match = _DURATION_RE.match(value)
    if match is None:
        raise ValueError(
            f"'{value}' is not a duration; use a number with ms, s, m or h (e.g. '5s')"
        )
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_size(value: object) -> int:
    """Bytes from `'64MiB'`, `'1GB'`, `'512KiB'`; a bare number is an error with a hint."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as '256MiB'")  # noqa: TRY004
    if isinstance(value, int | float):
        raise ValueError(f"size {value!r} has no unit; did you mean '{value}B' or '{value}MiB'?")  # noqa: TRY004
    if not isinstance(value, str):
        raise ValueError("expected a size such as '256MiB'")  # noqa: TRY004
    match = _SIZE_RE.match(value)
    if match is None:
        raise ValueError(f"'{value}' is not a size; use a number with B, KiB, MiB or GiB")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of a duration, for printing resolved configs."""
    millis = round(seconds * 1000)
    if millis % 3_600_000 == 0 and millis:
        return f"{millis // 3_600_000}h"
    if millis % 60_000 == 0 and millis:
        return f"{millis // 60_000}m"
    if millis % 1000 == 0:
        return f"{millis // 1000}s"
    return f"{millis}ms"


def format_size(size: int) -> str:
    for unit in ("GiB", "MiB", "KiB"):
        if size % _SIZE_UNITS[unit] == 0 and size:
            return f"{size // _SIZE_UNITS[unit]}{unit}"
    return f"{size}B"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {"type": "string", "pattern": _DURATION_RE.pattern, "examples": ["5s", "250ms"]}
    ),
]
Size = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema({"type": "string", "pattern": _SIZE_RE.pattern, "examples": ["256MiB"]}),
]
