"""The protocol notes the code cites are in the package, with every section it cites."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "gatewayd"
NOTES = PACKAGE / "enos" / "PROTOCOL.md"

_HEADING = re.compile(r"^#{2,4} (\d+(?:\.\d+)*)[. ]", re.MULTILINE)
#: `§3.5.2`, `§1.2-1.8`, `§1.2–1.5`, `§3-§5`, `§3.5.2/3.5.3`: each number named must exist.
_CITATION = re.compile(r"§(\d+(?:\.\d+)*)(?:\s*[-–/]\s*§?(\d+(?:\.\d+)*))?")
_NAMES_THE_NOTES = re.compile(r"(?:PROTOCOL|enos-protocol)\.md")


def _sections(text: str) -> set[str]:
    return set(_HEADING.findall(text))


def _cited(text: str) -> list[str]:
    """Section numbers cited in `text`, both ends of a range."""
    return [n for match in _CITATION.finditer(text) for n in match.groups() if n]


def _citing_files() -> dict[Path, list[str]]:
    """Every module naming the notes, with the sections it cites (bare `§N` included: in
    such a module they refer to the notes)."""
    return {
        path: _cited(path.read_text())
        for path in sorted(PACKAGE.rglob("*.py"))
        if _NAMES_THE_NOTES.search(path.read_text())
    }


def test_every_cited_section_exists() -> None:
    """Each `PROTOCOL.md §N` (or bare `§N` in a module citing the notes) names a section."""
    sections = _sections(NOTES.read_text())
    cited = _citing_files()
    missing = {
        str(path.relative_to(PACKAGE)): sorted(set(numbers) - sections)
        for path, numbers in cited.items()
        if set(numbers) - sections
    }
    assert missing == {}
    assert sum(len(numbers) for numbers in cited.values()) >= 40  # the walk found them


def test_the_notes_cross_references_exist() -> None:
    """The notes' own `§N` references point at sections they have."""
    text = NOTES.read_text()
    assert set(_cited(text)) <= _sections(text)


def test_the_checker_catches_a_missing_section() -> None:
    """A citation of a section the notes lack is reported, ranges checked at both ends."""
    sections = _sections("## 1. One\n### 1.2 Two\n#### 1.2.3 Three\n")
    assert sections == {"1", "1.2", "1.2.3"}
    assert _cited("see PROTOCOL.md §1.2-1.9 and §3-§5, §1.2.3/1.2") == [
        "1.2",
        "1.9",
        "3",
        "5",
        "1.2.3",
        "1.2",
    ]


def test_no_module_cites_the_notes_outside_the_package() -> None:
    """Citations name the file in the package (`PROTOCOL.md`), not a docs/ path."""
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if re.search(r"docs/enos-protocol\.md", path.read_text())
    ]
    assert offenders == []
