"""The protocol notes the code cites are in the package, with every section it cites.

Two sets of notes: the MQTT notes (`gatewayd/enos/PROTOCOL.md`, cited as `PROTOCOL.md §N`)
and the message-integration notes (`gatewayd/integration/PROTOCOL.md`, cited by that
path). A `§N` in a module belongs to the notes named last before it (or, before any name,
to the first named in the module), so a module may cite both.
"""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "gatewayd"
NOTES = PACKAGE / "enos" / "PROTOCOL.md"
INTEGRATION_NOTES = PACKAGE / "integration" / "PROTOCOL.md"
ALL_NOTES = {"enos": NOTES, "integration": INTEGRATION_NOTES}

_HEADING = re.compile(r"^#{2,4} (\d+(?:\.\d+)*)[. ]", re.MULTILINE)
#: `§3.5.2`, `§1.2-1.8`, `§1.2–1.5`, `§3-§5`, `§3.5.2/3.5.3`: each number named must exist.
_CITATION = re.compile(r"§(\d+(?:\.\d+)*)(?:\s*[-–/]\s*§?(\d+(?:\.\d+)*))?")
#: A name of either notes; the integration spellings first (they end in `PROTOCOL.md` too).
_NAMES_THE_NOTES = re.compile(
    r"(?P<integration>(?:integration/PROTOCOL|enos-http-integration)\.md)"
    r"|(?P<enos>(?:PROTOCOL|enos-protocol)\.md)"
)


def _sections(text: str) -> set[str]:
    return set(_HEADING.findall(text))


def _cited(text: str) -> list[str]:
    """Section numbers cited in `text`, both ends of a range."""
    return [n for match in _CITATION.finditer(text) for n in match.groups() if n]


def _cited_by_notes(text: str) -> dict[str, list[str]]:
    """Sections cited in `text`, by the notes each citation belongs to (see module doc)."""
    names = [(m.start(), m.lastgroup or "") for m in _NAMES_THE_NOTES.finditer(text)]
    if not names:
        return {}
    found: dict[str, list[str]] = {}
    for match in _CITATION.finditer(text):
        before = [notes for start, notes in names if start < match.start()]
        notes = before[-1] if before else names[0][1]
        found.setdefault(notes, []).extend(n for n in match.groups() if n)
    return found


def _citing_files() -> dict[Path, dict[str, list[str]]]:
    """Every module naming some notes, with the sections it cites in each (bare `§N`
    included: in such a module they refer to the notes)."""
    cited = {path: _cited_by_notes(path.read_text()) for path in sorted(PACKAGE.rglob("*.py"))}
    return {path: by_notes for path, by_notes in cited.items() if by_notes}


def test_every_cited_section_exists() -> None:
    """Each `§N` of a module citing the notes names a section of the notes it belongs to."""
    sections = {notes: _sections(path.read_text()) for notes, path in ALL_NOTES.items()}
    cited = _citing_files()
    missing = {
        f"{path.relative_to(PACKAGE)} -> {notes}": sorted(set(numbers) - sections[notes])
        for path, by_notes in cited.items()
        for notes, numbers in by_notes.items()
        if set(numbers) - sections[notes]
    }
    assert missing == {}
    counts = {
        notes: sum(len(by_notes.get(notes, [])) for by_notes in cited.values())
        for notes in ALL_NOTES
    }
    assert counts["enos"] >= 40  # the walk found them
    assert counts["integration"] >= 10


def test_the_integration_modules_cite_their_notes() -> None:
    """Each module of gatewayd/integration/ that relies on the protocol cites its notes."""
    citing = {path.name for path, by_notes in _citing_files().items() if "integration" in by_notes}
    expected = {"token.py", "message.py", "multipart.py", "stream.py", "replies.py", "http.py"}
    assert expected <= citing
    assert "http_cloud.py" in citing  # the emulator's HTTP side, written from them


def test_the_notes_cross_references_exist() -> None:
    """Each notes file's own `§N` references point at sections it has."""
    for path in ALL_NOTES.values():
        text = path.read_text()
        assert set(_cited(text)) <= _sections(text), path


def test_the_integration_notes_have_the_sections_the_code_relies_on() -> None:
    """Token §2, upload §3, stored files §4, MQTT channel §5, ambiguities §6."""
    text = INTEGRATION_NOTES.read_text()
    headings = dict(re.findall(r"^## (\d+)\. (.+)$", text, re.MULTILINE))
    assert headings == {
        "1": "Who calls it",
        "2": "Access token",
        "3": "Upload",
        "4": "Stored files",
        "5": "MQTT integration channel",
        "6": "Ambiguities and what we decided",
    }


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


def test_each_citation_belongs_to_the_notes_named_before_it() -> None:
    """Citations follow the last notes named; those before any name, the first one."""
    text = (
        "§6.1 first. The token: gatewayd/integration/PROTOCOL.md §2, §2.3. "
        "The MQTT side: PROTOCOL.md §3.8 and enos-protocol.md §1.2-1.5. "
        "Back to enos-http-integration.md §5."
    )
    assert _cited_by_notes(text) == {
        "integration": ["6.1", "2", "2.3", "5"],
        "enos": ["3.8", "1.2", "1.5"],
    }
    assert _cited_by_notes("§3 without notes") == {}


def test_no_module_cites_notes_outside_the_package() -> None:
    """Citations name the notes in the package, not a docs/ path or a file the repository
    does not have (`enos-http-integration.md` is summarised in integration/PROTOCOL.md)."""
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if re.search(r"docs/enos-protocol\.md|enos-http-integration\.md", path.read_text())
    ]
    assert offenders == []
