"""Golden config error cases: each `<case>/gatewayd.yaml` gives exactly `<case>/expected.txt`.

The test runs `gatewayd check gatewayd.yaml` in-process from inside the case directory,
so FILE prints as `gatewayd.yaml` / `models/<name>.yaml` and the expected text does not
depend on where the repository lives. `$CREDENTIALS_DIRECTORY` is unset for every case.

Git keeps no file modes but the executable bit, so a case whose files need modes (a
secret file open to the group, say) lists them in `<case>/modes` (`0640 gateway.secret`
per line, `#` comments): such a case is copied to a scratch directory and run there with
those modes; files it does not list are made 0600 (what a secret file must be).
"""

from __future__ import annotations

import shutil
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


def _with_modes(case_dir: Path, scratch: Path) -> Path:
    """The directory to run the case in: itself, or a copy with the modes `modes` sets."""
    listing = case_dir / "modes"
    if not listing.is_file():
        return case_dir
    copy = scratch / case_dir.name
    shutil.copytree(case_dir, copy)
    for file in copy.rglob("*"):
        if file.is_file():
            file.chmod(0o600)
    for line in listing.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            mode, name = line.split(maxsplit=1)
            (copy / name).chmod(int(mode, 8))
    return copy


@pytest.mark.parametrize("case", CASES)
def test_case_reports_exactly_the_expected_errors(
    case: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`gatewayd check` exits 78 with exactly the expected stderr and nothing on stdout."""
    monkeypatch.chdir(_with_modes(CASES_DIR / case, tmp_path))
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    status = main(["check", "gatewayd.yaml"])
    out, err = capsys.readouterr()
    expected = (CASES_DIR / case / "expected.txt").read_text(encoding="utf-8")
    assert err == expected
    assert out == ""
    assert status == 78
