"""Suite-wide fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _restore_umask() -> Iterator[None]:
    """`gatewayd run` sets the process umask to 0077 (its files are private); a test that
    runs it in-process must not leave later tests (a package build) with that umask."""
    before = os.umask(0o022)
    os.umask(before)
    yield
    os.umask(before)
