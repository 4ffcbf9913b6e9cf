"""A workspace's slash commands: Claude Code's `.claude/commands/**/*.md`, read as
untrusted input (a repository, or an agent, may have written them).

Claude Code's format: one Markdown file per command, its name the file's name without
`.md`; an optional YAML frontmatter between `---` lines gives `description`,
`argument-hint`, `allowed-tools` (a list, or one comma-separated string), `model` and
`disable-model-invocation`; the rest is the prompt. A file in a subdirectory is named
`dir:name` here (Claude Code shows the directory as a namespace and also accepts the
bare `name`: `find` does too, when it is unambiguous).

Bounded: at most MAX_DEPTH directory levels, MAX_ENTRIES directory entries and
MAX_COMMANDS commands, each file at most MAX_FILE_BYTES. No symbolic link is followed
(`.claude` and `commands` included): every directory and file is opened relative to its
parent's descriptor with O_NOFOLLOW, so a link swapped in meanwhile is refused too; a
FIFO or device is never read. The frontmatter goes through the strict YAML reader.
What cannot be read is listed as skipped, with the reason, never an exception.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputRefused
from ..yamlsafe import kind_of, load_text

COMMANDS_DIR = (".claude", "commands")
MAX_FILE_BYTES = 64 * 1024
MAX_COMMANDS = 500
MAX_ENTRIES = 5000
MAX_DEPTH = 4  # directory levels below .claude/commands
MAX_FIELD = 1000  # characters kept of a frontmatter string
MAX_TOOLS = 100
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


@dataclass(frozen=True)
class SlashCommand:
    name: str  # `review`, or `frontend:component` for frontend/component.md
    path: str  # relative to the workspace
    description: str | None = None
    argument_hint: str | None = None
    allowed_tools: tuple[str, ...] = ()
    model: str | None = None
    disable_model_invocation: bool = False
    body: str = ""
    problems: tuple[str, ...] = ()  # frontmatter fields ignored, and why

    @property
    def bare_name(self) -> str:
        return self.name.rpartition(":")[2]

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "description": self.description,
            "argument_hint": self.argument_hint,
            "allowed_tools": list(self.allowed_tools),
            "model": self.model,
            "disable_model_invocation": self.disable_model_invocation,
            "problems": list(self.problems),
        }


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass
class CommandSet:
    commands: dict[str, SlashCommand] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    found_dir: bool = False  # whether .claude/commands exists (as a real directory)

    def find(self, name: str) -> SlashCommand | None:
        """By full name (`/` optional), else by bare name if exactly one has it."""
        name = name.removeprefix("/")
        if name in self.commands:
            return self.commands[name]
        matches = self.candidates(name)
        return matches[0] if len(matches) == 1 else None

    def candidates(self, name: str) -> list[SlashCommand]:
        name = name.removeprefix("/")
        return [c for c in self.commands.values() if c.bare_name == name]


class _Walk:
    """The state of one bounded walk."""

    def __init__(self) -> None:
        self.found = CommandSet()
        self.entries = 0
        self.full = False


def read_commands(workspace: Path) -> CommandSet:
    """The commands under `workspace`/.claude/commands. `workspace` itself is the user's
    choice and may be a link; nothing below it is followed."""
    walk = _Walk()
    try:
        root = os.open(workspace, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        walk.found.skipped.append(Skipped(str(workspace), f"cannot open: {error.strerror}"))
        return walk.found
    descriptors = [root]
    try:
        where = ""
        for part in COMMANDS_DIR:
            where = f"{where}/{part}" if where else part
            child = _open_dir(part, descriptors[-1], where, walk)
            if child is None:
                return walk.found
            descriptors.append(child)
        walk.found.found_dir = True
        _read_dir(descriptors[-1], (), "/".join(COMMANDS_DIR), walk)
    finally:
        for descriptor in descriptors:
            os.close(descriptor)
    return walk.found


def _open_dir(name: str, parent: int, where: str, walk: _Walk) -> int | None:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        return None
    except OSError as error:
        walk.found.skipped.append(Skipped(where, _why_not_opened(name, parent, error)))
        return None


def _why_not_opened(name: str, parent: int, error: OSError) -> str:
    try:
        mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
    except OSError:
        return f"cannot open: {error.strerror}"
    if stat.S_ISLNK(mode):
        return "a symbolic link, not followed"
    if stat.S_ISDIR(mode):
        return f"cannot open: {error.strerror}"
    return f"not a regular file ({kind_of(mode)})" if not stat.S_ISREG(mode) else "not a directory"


def _entries(descriptor: int, where: str, walk: _Walk) -> Iterator[os.DirEntry[str]]:
    """A directory's entries, sorted, within the walk's entry budget."""
    listed: list[os.DirEntry[str]] = []
    if walk.full:
        return
    with os.scandir(descriptor) as scan:
        for entry in scan:
            walk.entries += 1
            if walk.entries > MAX_ENTRIES:
                walk.full = True
                walk.found.skipped.append(
                    Skipped(where, f"more than {MAX_ENTRIES} entries: the rest were not read")
                )
                break
            listed.append(entry)
    yield from sorted(listed, key=lambda e: e.name)


def _read_dir(descriptor: int, prefix: tuple[str, ...], where: str, walk: _Walk) -> None:
    for entry in _entries(descriptor, where, walk):
        path = f"{where}/{entry.name}"
        if entry.name.startswith("."):
            continue  # hidden, as Claude Code ignores them
        if entry.is_symlink():
            walk.found.skipped.append(Skipped(path, "a symbolic link, not followed"))
        elif entry.is_dir(follow_symlinks=False):
            _read_subdir(descriptor, entry.name, prefix, path, walk)
        elif entry.name.endswith(".md"):
            _read_file(descriptor, entry.name, prefix, path, walk)


def _read_subdir(parent: int, name: str, prefix: tuple[str, ...], path: str, walk: _Walk) -> None:
    if len(prefix) >= MAX_DEPTH:
        walk.found.skipped.append(Skipped(path, f"deeper than {MAX_DEPTH} levels: not read"))
        return
    if not _SEGMENT.match(name):
        walk.found.skipped.append(Skipped(path, "not a usable command namespace"))
        return
    child = _open_dir(name, parent, path, walk)
    if child is None:
        return
    try:
        _read_dir(child, (*prefix, name), path, walk)
    finally:
        os.close(child)


def _read_file(parent: int, name: str, prefix: tuple[str, ...], path: str, walk: _Walk) -> None:
    stem = name.removesuffix(".md")
    full = ":".join((*prefix, stem))
    if not _SEGMENT.match(stem):
        walk.found.skipped.append(Skipped(path, "not a usable command name"))
        return
    if len(walk.found.commands) >= MAX_COMMANDS:
        walk.found.skipped.append(Skipped(path, f"more than {MAX_COMMANDS} commands: not read"))
        return
    try:
        raw = _read_regular(parent, name)
        command = parse_command(full, path, raw.decode("utf-8"))
    except UnicodeDecodeError:
        walk.found.skipped.append(Skipped(path, "not UTF-8 text"))
        return
    except CommandFileError as unreadable:
        walk.found.skipped.append(Skipped(path, str(unreadable)))
        return
    walk.found.commands[full] = command


class CommandFileError(Exception):
    """A command file that cannot be used; the message says why (one line)."""


def _read_regular(parent: int, name: str) -> bytes:
    try:
        descriptor = os.open(name, _FILE_FLAGS, dir_fd=parent)
    except OSError as error:
        raise CommandFileError(_why_not_opened(name, parent, error)) from None
    with os.fdopen(descriptor, "rb") as handle:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise CommandFileError(f"not a regular file ({kind_of(mode)})")
        try:
            raw = handle.read(MAX_FILE_BYTES + 1)
        except OSError as error:
            raise CommandFileError(f"cannot read: {error.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise CommandFileError(f"larger than {MAX_FILE_BYTES} bytes")
    return raw


def parse_command(name: str, path: str, text: str) -> SlashCommand:
    """One command file's text: frontmatter (if any) and prompt. Pure."""
    text = text.removeprefix("\ufeff")
    front, body = split_frontmatter(text, path)
    fields: dict[str, Any] = {}
    problems: list[str] = []
    if front is not None and front.strip():
        fields = _frontmatter(front, path)
    description = _text(fields, "description", problems)
    if description is None:
        description = _first_line(body)  # Claude Code's default
    return SlashCommand(
        name=name,
        path=path,
        description=description,
        argument_hint=_hint(fields, problems),
        allowed_tools=_tools(fields, problems),
        model=_text(fields, "model", problems),
        disable_model_invocation=fields.get("disable-model-invocation") is True,
        body=body,
        problems=tuple(problems),
    )


def _frontmatter(front: str, path: str) -> dict[str, Any]:
    """Strict YAML; or, for what is not YAML at all but is how Claude Code's own docs
    write it (`argument-hint: [pr-number] [priority]`), plain `key: value` lines. An
    anchor, a tag or a duplicate key is refused either way."""
    try:
        data = load_text(front, path).data
    except InputRefused as refused:
        message = refused.problems[0].message
        if not message.startswith("invalid YAML"):
            raise CommandFileError(f"frontmatter: {message}") from None
        return _plain_lines(front)
    if not isinstance(data, dict):
        raise CommandFileError("frontmatter: not a mapping")
    return data


_PLAIN = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*):[ \t]*(.*?)[ \t]*$")


def _plain_lines(front: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for line in front.splitlines():
        match = _PLAIN.match(line)
        if match is None:
            if line.strip() and not line.lstrip().startswith("#"):
                raise CommandFileError("frontmatter: neither YAML nor 'key: value' lines")
            continue
        key, value = match[1], match[2]
        if key in fields:
            raise CommandFileError(f"frontmatter: duplicate key {key!r}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        fields[key] = value
    return fields


def split_frontmatter(text: str, path: str = "") -> tuple[str | None, str]:
    """(frontmatter or None, body). A `---` line opens it and the next `---` closes it."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip("\r\n") != "---":
        return None, text
    for index in range(1, len(lines)):
        if lines[index].rstrip("\r\n") == "---":
            return "".join(lines[1:index]), "".join(lines[index + 1 :])
    raise CommandFileError("frontmatter: no closing '---' line")


def _text(fields: dict[str, Any], key: str, problems: list[str]) -> str | None:
    value = fields.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        problems.append(f"{key}: not a string (ignored)")
        return None
    return str(value)[:MAX_FIELD]


def _hint(fields: dict[str, Any], problems: list[str]) -> str | None:
    # `argument-hint: [message]` is YAML for a list; Claude Code shows it as written.
    value = fields.get("argument-hint")
    if isinstance(value, list) and all(isinstance(v, str | int) for v in value):
        return " ".join(f"[{v}]" for v in value)[:MAX_FIELD]
    return _text(fields, "argument-hint", problems)


def _tools(fields: dict[str, Any], problems: list[str]) -> tuple[str, ...]:
    value = fields.get("allowed-tools")
    if value is None:
        return ()
    if isinstance(value, str):
        tools = split_tools(value)
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        tools = [v.strip() for v in value if v.strip()]
    else:
        problems.append("allowed-tools: not a string or a list of strings (ignored)")
        return ()
    if len(tools) > MAX_TOOLS:
        problems.append(f"allowed-tools: more than {MAX_TOOLS} (the rest ignored)")
    return tuple(tool[:MAX_FIELD] for tool in tools[:MAX_TOOLS])


def split_tools(value: str) -> list[str]:
    """`Bash(git add:*), Read` -> ['Bash(git add:*)', 'Read']: commas inside
    parentheses belong to the tool's pattern."""
    tools, current, depth = [], "", 0
    for char in value:
        if char == "," and depth == 0:
            tools.append(current)
            current = ""
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        depth = max(depth, 0)
        current += char
    tools.append(current)
    return [tool.strip() for tool in tools if tool.strip()]


def _first_line(body: str) -> str | None:
    for line in body.splitlines():
        if line.strip():
            return line.strip()[:MAX_FIELD]
    return None
