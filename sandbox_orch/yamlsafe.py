"""A strict YAML reader for files we do not trust (workflows) or must read exactly (policies).

It refuses anchors, aliases, tags, duplicate keys, deep nesting and large files, and it
resolves scalars by the YAML 1.2 core schema: PyYAML's default 1.1 rules would read the
key `on` (in `retries: {on: [...]}`) as the boolean true and `017` as octal. Every value
keeps the line it came from, so later stages can say `FILE:LINE: field: message`.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from .errors import InputRefused, Problem

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 64

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Document:
    """Plain data read from a YAML file, with the line of every value."""

    path: str
    data: Any
    lines: dict[Loc, int] = field(repr=False)
    sha256: str = ""  # of the bytes read: what ran, even if the file changes meanwhile

    def line_of(self, loc: Iterable[str | int]) -> int | None:
        """The line of `loc`, or of its nearest ancestor that exists in the file."""
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get(())

    def problem(self, loc: Iterable[str | int], message: str) -> Problem:
        loc = tuple(loc)
        return Problem(self.path, self.line_of(loc), dotted(loc), message)


def dotted(loc: Iterable[str | int]) -> str:
    """`('nodes', 'build', 'needs', 0)` -> `nodes.build.needs[0]`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _Refused(Exception):
    def __init__(self, mark: yaml.Mark | None, message: str) -> None:
        self.mark = mark
        self.message = message


_CORE_SCHEMA = [
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
]


class _StrictLoader(yaml.SafeLoader):
    """Composes a node tree, refusing what this project never accepts."""

    yaml_implicit_resolvers: dict = {}
    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(event.start_mark, "YAML aliases are not allowed")
        if getattr(event, "anchor", None) is not None:
            raise _Refused(event.start_mark, "YAML anchors are not allowed")
        if getattr(event, "tag", None) is not None and not isinstance(event, yaml.ScalarEvent):
            raise _Refused(event.start_mark, f"YAML tags are not allowed ({event.tag})")
        if isinstance(event, yaml.ScalarEvent) and event.tag is not None:
            raise _Refused(event.start_mark, f"YAML tags are not allowed ({event.tag})")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(event.start_mark, f"nesting deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


for _kind, _pattern, _first in _CORE_SCHEMA:
    _StrictLoader.add_implicit_resolver(f"tag:yaml.org,2002:{_kind}", re.compile(_pattern), _first)


def _scalar(node: yaml.ScalarNode) -> Any:
    kind = node.tag.rsplit(":", 1)[-1]
    text = node.value
    if kind == "null":
        return None
    if kind == "bool":
        return text.lower() == "true"
    if kind == "int":
        return int(text, 0) if text[:2] in ("0o", "0x") else int(text, 10)
    if kind == "float":
        # .inf/.nan are YAML's spellings; Python's float() wants inf/nan (later stages
        # refuse them where a number must be finite).
        special = text.lstrip("+-").lower() in (".inf", ".nan")
        return float(text.replace(".", "", 1) if special else text)
    return text


def _build(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> Any:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.ScalarNode):
        return _scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*loc, i), lines) for i, item in enumerate(node.value)]
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise _Refused(key_node.start_mark, "mapping keys must be plain scalars")
        key = _scalar(key_node)
        if key in mapping:
            raise _Refused(key_node.start_mark, f"duplicate key {key!r}")
        mapping[key] = _build(value_node, (*loc, key), lines)
        lines[(*loc, key)] = key_node.start_mark.line + 1
    return mapping


def load_text(text: str, path: str) -> Document:
    """Parse YAML text strictly; raise InputRefused with FILE:LINE on anything refused."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise InputRefused([Problem(path, None, "", f"file is larger than {MAX_BYTES} bytes")])
    try:  # the reader checks for control characters as it is made
        loader = _StrictLoader(text)
    except yaml.reader.ReaderError as error:
        raise InputRefused([_unprintable(error, text, path)]) from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise _Refused(None, "the file is empty")
        lines: dict[Loc, int] = {}
        data = _build(node, (), lines)
    except _Refused as refused:
        line = refused.mark.line + 1 if refused.mark else None
        raise InputRefused([Problem(path, line, "", refused.message)]) from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark else None
        message = " ".join(filter(None, [error.context, error.problem]))
        raise InputRefused([Problem(path, line, "", f"invalid YAML: {message}")]) from None
    except yaml.YAMLError as error:  # one line: the library's messages span several
        message = " ".join(str(error).split())
        raise InputRefused([Problem(path, None, "", f"invalid YAML: {message}")]) from None
    finally:
        loader.dispose()
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return Document(path=path, data=data, lines=lines, sha256=digest)


def _unprintable(error: yaml.reader.ReaderError, text: str, path: str) -> Problem:
    """A control character (NUL, BEL, ...) YAML refuses anywhere, even quoted: one line
    naming where, never the library's several."""
    line = text.count("\n", 0, error.position) + 1
    message = f"invalid YAML: unprintable character U+{error.character:04X} is not allowed"
    return Problem(path, line, "", message)


def load_file(path: Path) -> Document:
    """Read at most MAX_BYTES (+1, to notice more) and parse strictly."""
    shown = str(path)
    raw = read_regular(path, MAX_BYTES)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputRefused([Problem(shown, None, "", f"not UTF-8 text: {error.reason}")]) from None
    if path.suffix.lower() == ".json":
        # JSON is YAML, except that YAML refuses a tab where JSON allows whitespace; a
        # valid JSON file has a raw tab nowhere else (in a string it is written \t).
        text = text.replace("\t", " ")
    return replace(load_text(text, shown), sha256=hashlib.sha256(raw).hexdigest())


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes, or InputRefused. Opened
    without blocking and checked on the open descriptor: a FIFO (or a link to one) would
    block the read forever, /dev/zero would never end; neither is ever read."""
    shown = str(path)
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as error:
        kind = _kind_of(path)
        why = f"not a regular file ({kind})" if kind else f"cannot read: {error.strerror}"
        raise InputRefused([Problem(shown, None, "", why)]) from None
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        why = f"not a regular file ({kind_of(mode)})"
        raise InputRefused([Problem(shown, None, "", why)])
    with os.fdopen(descriptor, "rb") as handle:
        try:
            raw = handle.read(limit + 1)
        except OSError as error:
            raise InputRefused(
                [Problem(shown, None, "", f"cannot read: {error.strerror}")]
            ) from None
    if raw is None:  # a "regular" file that would block (/proc/kmsg): not one to read
        raise InputRefused([Problem(shown, None, "", "cannot read: it would block")])
    if len(raw) > limit:
        raise InputRefused([Problem(shown, None, "", f"file is larger than {limit} bytes")])
    return raw


_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def kind_of(mode: int) -> str:
    """What a file of `mode` is, in words (for refusing what is not a regular file)."""
    return _KINDS.get(stat.S_IFMT(mode), "not a file")


def _kind_of(path: Path) -> str | None:
    """What `path` is when it is not a regular file (a socket cannot be opened at all)."""
    try:
        return _KINDS.get(stat.S_IFMT(os.stat(path).st_mode))
    except OSError:
        return None
