"""What the host's git runs from a directory on its own: a repository's hooks and the
commands its config names (core.fsmonitor, core.pager, core.sshCommand, ...), read at the
user's next `git status`. Written by a node through a read-write mount, that is code
execution on the host; so admission finds them (during its one walk of each mount source,
mounts.walk) and the backend binds each again read-only over the mount.

Found: git directories (each `.git`, and any directory git itself takes for a bare
repository), `.git` files (worktrees, submodules) with the git directory they name, the
hooks directory a config names (core.hooksPath, which husky and others point into the
work tree) and the files a config includes (include.path, includeIf.*.path).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path

from .errors import InputRefused
from .yamlsafe import read_regular

# Each is a mount: a read-write source with more is refused (mount it read-only).
MAX_GIT_PATHS = 64
CONFIG_LIMIT = 1024 * 1024
MAX_INCLUDE_DEPTH = 4  # git's own limit is 10; deeper chains are not a work tree's habit
# A section's name: up to `]`, a dot (`[core.sub]`) or any white space before a
# subsection (`[includeIf\t"gitdir:..."]`, which git reads as includeIf too).
_SECTION = re.compile(r'\[([^\]\s."]*)')


def is_git_dir(kinds: Mapping[str, int]) -> bool:
    """What git takes for a git directory (setup.c is_git_directory), from the file types
    (stat.S_IFMT) of a directory's entries by name."""
    return (
        kinds.get("HEAD") == stat.S_IFREG
        and kinds.get("objects") == stat.S_IFDIR
        and kinds.get("refs") == stat.S_IFDIR
    )


def of_dot_git(dot_git: Path, worktree: Path) -> list[Path]:
    """A `.git` entry of `worktree` (a directory, even empty: a node would complete it into
    a repository the user owns; or a file naming the git directory), what it names, and
    what that git directory's config names."""
    if dot_git.is_dir():
        return [dot_git, *named_in_config(dot_git / "config", worktree)]
    gitdir = _gitdir_named(dot_git)
    if gitdir is None:
        return [dot_git]
    return [dot_git, gitdir, *named_in_config(gitdir / "config", worktree)]


def named_in_config(config: Path, worktree: Path | None, depth: int = 0) -> list[Path]:
    """core.hooksPath (relative to the work tree, as git takes it; skipped when there is
    none to be relative to) and included files (relative to the config), recursively."""
    found: list[Path] = []
    for section, key, value in _entries(_read_small(config) or ""):
        place = Path(os.path.expanduser(value))
        if section == "core" and key == "hookspath" and (place.is_absolute() or worktree):
            found.append(_real(worktree / place if worktree else place))
        elif section in ("include", "includeif") and key == "path":
            included = _real(config.parent / place)
            found.append(included)
            if depth < MAX_INCLUDE_DEPTH:
                found += named_in_config(included, worktree, depth + 1)
    return found


def named_in_user_config() -> list[Path]:
    """What the user's own git configuration names by absolute path (a global hooks
    directory, included files): inside a read-write mount, kept read-only too."""
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    configs = [Path(os.path.expanduser("~/.gitconfig")), Path(xdg) / "git" / "config"]
    return [path for config in configs for path in named_in_config(config, None)]


def inside_git(path: Path) -> Path | None:
    """The git directory `path` (resolved) is, or lies in, if any."""
    for place in (path, *path.parents):
        if place.name == ".git" or is_git_dir(_kinds(place)):
            return place
    return None


def _entries(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of a git config's lines, names lower-cased: enough to find
    paths; subsections (`[includeIf "gitdir:..."]`) are kept only as their section."""
    section, entries = "", []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = _SECTION.match(line).group(1).lower()
            continue
        key, sep, value = line.partition("=")
        if sep:
            entries.append((section, key.strip().lower(), _value(value)))
    return entries


def _value(raw: str) -> str:
    """A config value as git reads it (config.c parse_value): `#` or `;` outside quotes
    starts a comment (no space needed before it), quotes are dropped, a backslash takes
    the next character, white space outside quotes is dropped at the ends and kept as
    one space per character inside."""
    value, spaces, quoted, chars = "", 0, False, iter(raw)
    for char in chars:
        if char.isspace() and not quoted:
            spaces += len(value) > 0
            continue
        if char in "#;" and not quoted:
            break
        value += " " * spaces
        spaces = 0
        if char == '"':
            quoted = not quoted
        else:
            value += next(chars, "") if char == "\\" else char
    return value


def _gitdir_named(dot_git: Path) -> Path | None:
    """The directory a `.git` file names (`gitdir: PATH`, relative to the file)."""
    text = _read_small(dot_git)
    if not text or not text.startswith("gitdir:"):
        return None
    named = text.removeprefix("gitdir:").splitlines()[0].strip()
    return _real(dot_git.parent / named) if named else None


def _read_small(path: Path) -> str | None:
    """A small regular file's text, read without blocking; None for anything else."""
    try:
        return read_regular(path, CONFIG_LIMIT).decode("utf-8", "replace")
    except InputRefused:
        return None


def _kinds(directory: Path) -> dict[str, int]:
    kinds = {}
    for name in ("HEAD", "objects", "refs"):
        with contextlib.suppress(OSError):
            kinds[name] = stat.S_IFMT((directory / name).lstat().st_mode)
    return kinds


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))
