"""Located configuration errors: one `ConfigIssue` per problem, all raised together.

Every issue renders as one line a field engineer (and an editor's problem matcher) can
jump to::

    FILE:LINE:COL: dotted.path: message (hint)

`FILE` is the path as the user gave it (model files: joined onto it), LINE and COL are
1-based. The dotted path names mapping keys with dots and list items with brackets:
`devices[2].poll_interval`, `points[0].enum.3`. Two deliberate shortenings keep the
format honest rather than padded: an issue without a path (a YAML syntax error, an
empty file) omits the `dotted.path: ` part, and an issue without a position (a file
that cannot be read at all) omits `:LINE:COL`. ` (hint)` is omitted when there is none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: One step into the YAML data: a mapping key (always a str here) or a list index.
PathPart = str | int
#: A location in the YAML data, from the document root.
DataPath = tuple[PathPart, ...]


def format_path(path: Sequence[PathPart]) -> str:
    """`('devices', 2, 'poll_interval')` → `devices[2].poll_interval`."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in one file, at one place."""

    file: str
    line: int | None  # 1-based; None when the file itself could not be read
    column: int | None
    path: DataPath
    message: str
    hint: str | None = None

    def render(self) -> str:
        """The issue as the one line `gatewayd check` prints."""
        where = self.file if self.line is None else f"{self.file}:{self.line}:{self.column}"
        text = f"{where}: "
        if self.path:
            text += f"{format_path(self.path)}: "
        text += self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


def count_line(count: int) -> str:
    """`1 error`, `3 errors`: the closing line of a report."""
    return f"{count} error" if count == 1 else f"{count} errors"


class ConfigError(Exception):
    """A configuration that cannot be used; `issues` holds every problem found."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues: tuple[ConfigIssue, ...] = tuple(issues)
        super().__init__(self.render())

    def lines(self) -> list[str]:
        """One rendered line per issue, then the count line."""
        return [issue.render() for issue in self.issues] + [count_line(len(self.issues))]

    def render(self) -> str:
        """The whole report, newline-separated, as `gatewayd check` prints it to stderr."""
        return "\n".join(self.lines())
