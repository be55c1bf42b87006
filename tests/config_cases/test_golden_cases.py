"""Golden config error cases: each `<case>/gatewayd.yaml` gives exactly `<case>/expected.txt`.

The test runs `gatewayd check gatewayd.yaml` in-process from inside the case directory,
so FILE prints as `gatewayd.yaml` / `models/<name>.yaml` and the expected text does not
depend on where the repository lives. `$CREDENTIALS_DIRECTORY` is unset for every case.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gatewayd.cli import main

CASES_DIR = Path(__file__).resolve().parent
CASES = sorted(p.name for p in CASES_DIR.iterdir() if (p / "gatewayd.yaml").is_file())


def test_there_are_enough_cases() -> None:
    """At least 25 golden cases exist, and each has its expected output."""
    assert len(CASES) >= 25
    missing = [c for c in CASES if not (CASES_DIR / c / "expected.txt").is_file()]
    assert missing == []


@pytest.mark.parametrize("case", CASES)
def test_case_reports_exactly_the_expected_errors(
    case: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`gatewayd check` exits 78 with exactly the expected stderr and nothing on stdout."""
    monkeypatch.chdir(CASES_DIR / case)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    status = main(["check", "gatewayd.yaml"])
    out, err = capsys.readouterr()
    expected = (CASES_DIR / case / "expected.txt").read_text(encoding="utf-8")
    assert err == expected
    assert out == ""
    assert status == 78
