"""YAML to plain Python data, keeping the line and column of every node.

PyYAML's composer gives a node tree with marks; this module walks it once, building
dicts/lists/scalars and a side table `DataPath → (line, column)` for every value (and,
for mapping entries, for the key too). Duplicate keys, which PyYAML silently lets the
last one win, are reported as issues; the first occurrence is kept. Merge keys (`<<`)
and aliases work as in YAML 1.1. libyaml's C parser is used when available: the loader
runs at every start and on every SIGHUP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gatewayd.config.errors import ConfigIssue, DataPath

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"

#: 1-based (line, column).
Position = tuple[int, int]


def _position(node: Node) -> Position:
    mark = node.start_mark
    return (mark.line + 1, mark.column + 1)


@dataclass
class YamlDocument:
    """One parsed file: its data and where each piece of it was written."""

    file: str  # as it is printed in error lines
    data: Any
    value_positions: dict[DataPath, Position] = field(default_factory=dict)
    key_positions: dict[DataPath, Position] = field(default_factory=dict)

    def position(self, path: DataPath, *, key: bool = False) -> Position:
        """Where `path` was written; for a path that does not exist (a missing key),
        the position of its nearest existing parent."""
        if key and path in self.key_positions:
            return self.key_positions[path]
        for end in range(len(path), -1, -1):
            found = self.value_positions.get(path[:end])
            if found is not None:
                return found
        return (1, 1)

    def issue(
        self, path: DataPath, message: str, hint: str | None = None, *, key: bool = False
    ) -> ConfigIssue:
        """A `ConfigIssue` at `path` in this document (at the key itself when `key`)."""
        line, column = self.position(path, key=key)
        return ConfigIssue(self.file, line, column, path, message, hint)


class _Builder:
    """Walks a composed node tree into data plus positions, collecting issues."""

    def __init__(self, loader: yaml.SafeLoader, doc: YamlDocument) -> None:
        self._loader = loader
        self._doc = doc
        self._active: set[int] = set()  # node ids being built: catches recursive aliases
        self.issues: list[ConfigIssue] = []

    def _issue(self, node: Node, path: DataPath, message: str, hint: str | None = None) -> None:
        line, column = _position(node)
        self.issues.append(ConfigIssue(self._doc.file, line, column, path, message, hint))

    def build(self, node: Node, path: DataPath) -> Any:
        self._doc.value_positions.setdefault(path, _position(node))
        if id(node) in self._active:
            self._issue(node, path, "recursive alias")
            return None
        if isinstance(node, ScalarNode):
            try:
                return self._loader.construct_object(node)
            except yaml.constructor.ConstructorError:
                self._issue(node, path, f"unknown tag '{node.tag}'", "remove the tag")
                return node.value
        self._active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                self._check_tag(node, path, _MAP_TAG)
                return self._mapping(node, path)
            if isinstance(node, SequenceNode):
                self._check_tag(node, path, _SEQ_TAG)
                return [self.build(item, (*path, index)) for index, item in enumerate(node.value)]
        finally:
            self._active.discard(id(node))
        raise TypeError(f"unexpected YAML node {node!r}")  # pragma: no cover - composer only

    def _check_tag(self, node: Node, path: DataPath, expected: str) -> None:
        if node.tag != expected:
            self._issue(node, path, f"unknown tag '{node.tag}'", "remove the tag")

    def _mapping(self, node: MappingNode, path: DataPath) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        first_seen: dict[Any, Position] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            if not isinstance(key_node, ScalarNode):
                self._issue(key_node, path, "mapping keys must be plain scalars")
                continue
            key = self.build_key(key_node, path)
            child = (*path, str(key))
            if key in first_seen:
                line, _ = first_seen[key]
                self._issue(
                    key_node, child, f"duplicate key '{key}'", f"first given at line {line}"
                )
                continue
            first_seen[key] = _position(key_node)
            self._doc.key_positions[child] = _position(key_node)
            result[key] = self.build(value_node, child)
        # Merged entries never override explicit ones; earlier merges win over later ones.
        for merge in merges:
            sources = merge.value if isinstance(merge, SequenceNode) else [merge]
            for source in sources:
                if not isinstance(source, MappingNode):
                    self._issue(source, path, "'<<' merges a mapping or a list of mappings")
                    continue
                for key, value in self._mapping(source, path).items():
                    result.setdefault(key, value)
        return result

    def build_key(self, node: ScalarNode, path: DataPath) -> Any:
        try:
            key = self._loader.construct_object(node)
        except yaml.constructor.ConstructorError:
            self._issue(node, path, f"unknown tag '{node.tag}'", "remove the tag")
            return node.value
        try:
            hash(key)
        except TypeError:  # pragma: no cover - scalars always hash
            return node.value
        if isinstance(key, bool) and not node.style:  # plain, not quoted
            # YAML 1.1 reads a bare `on`/`off`/`yes`/`no` as a boolean; as a key it is
            # the word the engineer wrote (a report rule's `on:`), never a boolean.
            return node.value
        return key


def parse_yaml(text: str, file: str) -> tuple[YamlDocument | None, list[ConfigIssue]]:
    """Parse one YAML document. Returns (None, [issue]) on a syntax error; otherwise the
    document and the issues found while building it (duplicate keys, unknown tags)."""
    doc = YamlDocument(file=file, data=None)
    loader = _Loader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            return None, [_syntax_issue(file, exc, text)]
        except yaml.reader.ReaderError as exc:
            # A control character (e.g. NUL): the reader knows only its offset in the text.
            line = text.count("\n", 0, exc.position) + 1
            column = exc.position - text.rfind("\n", 0, exc.position)
            code = exc.character if isinstance(exc.character, int) else ord(exc.character)
            message = f"control character #x{code:04x} is not allowed in YAML"
            return None, [ConfigIssue(file, line, column, (), message)]
        except yaml.YAMLError as exc:
            return None, [ConfigIssue(file, None, None, (), _first_line(str(exc)))]
        if root is None:
            return doc, []
        builder = _Builder(loader, doc)
        doc.data = builder.build(root, ())
        return doc, builder.issues
    finally:
        loader.dispose()


def load_yaml_file(path: Path, file: str) -> tuple[YamlDocument | None, list[ConfigIssue]]:
    """Read and parse `path`, printing it as `file` in issues."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None, [ConfigIssue(file, None, None, (), "cannot read: not UTF-8 text")]
    except OSError as exc:
        return None, [ConfigIssue(file, None, None, (), f"cannot read: {exc.strerror}")]
    return parse_yaml(text, file)


def _syntax_issue(file: str, exc: yaml.MarkedYAMLError, text: str) -> ConfigIssue:
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
    message = f"YAML syntax error: {exc.problem or exc.context or 'invalid YAML'}"
    hint = None
    if exc.context and exc.problem:
        hint = exc.context
        if exc.context_mark is not None and exc.context_mark is not mark:
            hint += f" that starts at line {exc.context_mark.line + 1}"
    if mark is not None and _char_at(text, mark.line, mark.column) == "\t":
        message, hint = "YAML syntax error: tab character", "YAML indents with spaces, not tabs"
    return ConfigIssue(file, line, column, (), message, hint)


def _char_at(text: str, line: int, column: int) -> str:
    lines = text.splitlines()
    return lines[line][column : column + 1] if line < len(lines) else ""


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "invalid YAML"
