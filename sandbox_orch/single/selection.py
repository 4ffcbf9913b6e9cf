"""Which files of a workspace `single` copies: in a git repository what git would keep
(tracked plus untracked-not-ignored), outside git everything; never `.git`, our run store,
nor what `--exclude` leaves out. Paths are bytes relative to the workspace (a name may hold
a newline or bytes that are no UTF-8); nothing here follows a symlink.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from .gitcommand import git_output, run_git

SKIPPED = (b".git", b".sandbox-orch")  # history and our own run store stay on the host
# Claude Code's project settings: a workspace is untrusted input, and these would choose
# the agent's model, widen its permissions (WebSearch, which runs on the provider's side)
# or add hooks, past the policy. Not copied, so never read; never in the patch either.
# (Its project slash commands, .claude/commands, stay: they are prompts.)
AGENT_SETTINGS = (b".claude/settings.json", b".claude/settings.local.json")
GITLINK = 0o160000  # a submodule in git's index: copied as an empty directory


@dataclass(frozen=True)
class GitRepo:
    """The repository a workspace lies in, as `single` needs it."""

    top: Path  # the working tree's root
    prefix: bytes  # the workspace relative to `top` (b"" at the root), with a trailing "/"
    objects: Path  # the object directory (borrowed read-only as an alternate)
    excludes: tuple[Path, ...]  # info/exclude and core.excludesFile, where they exist
    object_format: str  # sha1 or sha256
    head: str | None  # HEAD's commit, None on an unborn branch


@dataclass(frozen=True)
class Entry:
    path: bytes  # relative to the workspace
    mode: int  # st_mode from lstat (or GITLINK)
    size: int
    mtime_ns: int
    gitlink: str | None = None  # a submodule's commit


def git(args: Iterable[str], cwd: Path, stdin: bytes | None = None) -> bytes:
    """Run git in the user's repository (their own configuration applies); its stdout."""
    return git_output(args, cwd, stdin=stdin)


def find_repo(workspace: Path) -> GitRepo | None:
    """The git repository `workspace` is inside, or None (no git, or not a repository)."""
    try:
        done = run_git(
            ["rev-parse", "--path-format=absolute", "--show-toplevel", "--git-common-dir"],
            workspace,
        )
    except FileNotFoundError:
        return None
    if done.returncode != 0:
        return None
    top_text, common = os.fsdecode(done.stdout).splitlines()[:2]
    top = Path(top_text)
    relative = os.path.relpath(os.path.realpath(workspace), os.path.realpath(top))
    prefix = b"" if relative == "." else os.fsencode(relative) + b"/"
    head = run_git(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], workspace)
    fmt = git(["rev-parse", "--show-object-format"], workspace).decode().strip() or "sha1"
    return GitRepo(
        top=top,
        prefix=prefix,
        objects=Path(common) / "objects",
        excludes=_exclude_files(workspace, Path(common)),
        object_format=fmt,
        head=head.stdout.decode().strip() or None if head.returncode == 0 else None,
    )


def _exclude_files(workspace: Path, common: Path) -> tuple[Path, ...]:
    """The ignore files besides .gitignore: info/exclude, and core.excludesFile (or its
    default under XDG_CONFIG_HOME), as the user's git reads them."""
    configured = run_git(["config", "--path", "core.excludesFile"], workspace).stdout.strip()
    if configured:
        user = Path(os.fsdecode(configured))
    else:
        xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
        user = Path(xdg) / "git" / "ignore"
    return tuple(p for p in (common / "info" / "exclude", user) if p.is_file())


def excluded(path: bytes, patterns: Iterable[str]) -> bool:
    """`--exclude` patterns (shell globs): one without "/" matches any name along the path
    (`*.log`, `node_modules`); one with "/" matches from the workspace root (`build/*.o`,
    `docs/big`); either way, a directory matched leaves out everything below it."""
    parts = path.rstrip(b"/").split(b"/")
    names = [os.fsdecode(part) for part in parts]
    for pattern in patterns:
        anchored = pattern.strip("/")
        if "/" not in anchored:
            if any(fnmatchcase(name, anchored) for name in names):
                return True
        elif any(fnmatchcase("/".join(names[:n]), anchored) for n in range(1, len(names) + 1)):
            return True
    return False


def skipped(path: bytes, store: bytes | None) -> bool:
    """`.git` and `.sandbox-orch` anywhere, the agent's project settings, and the run
    store wherever it lies inside."""
    if any(part in SKIPPED for part in path.split(b"/")) or path in AGENT_SETTINGS:
        return True
    return store is not None and (path == store or path.startswith(store + b"/"))


def select(
    workspace: Path, repo: GitRepo | None, patterns: tuple[str, ...], store: bytes | None
) -> list[Entry]:
    """The files to copy, with what lstat says of them now (sorted by path)."""
    paths = _git_paths(workspace) if repo is not None else walk(workspace, patterns, store)
    root = os.fsencode(workspace)
    entries: list[Entry] = []
    links: dict[bytes, bool] = {}
    for path, oid in paths:
        if skipped(path, store) or excluded(path, patterns) or beyond_link(root, path, links):
            continue
        entry = _entry(root, path, oid)
        if entry is not None:
            entries.append(entry)
    entries.sort(key=lambda e: e.path)
    return entries


def beyond_link(root: bytes, path: bytes, cache: dict[bytes, bool]) -> bool:
    """Whether a directory along `path` is a symlink (or not a directory): lstat of the
    path itself would follow it, perhaps out of the tree. `cache` remembers directories."""
    parent = os.path.dirname(path)
    if not parent:
        return False
    if parent not in cache:
        try:
            mode = os.lstat(os.path.join(root, parent)).st_mode
            cache[parent] = not stat.S_ISDIR(mode) or beyond_link(root, parent, cache)
        except OSError:
            cache[parent] = True
    return cache[parent]


def _entry(root: bytes, path: bytes, gitlink: str | None) -> Entry | None:
    try:
        st = os.lstat(os.path.join(root, path))
    except FileNotFoundError:  # tracked but deleted: the user's deletion stands
        return None
    if gitlink is not None:
        return Entry(path, GITLINK, 0, 0, gitlink) if stat.S_ISDIR(st.st_mode) else None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        return None  # a directory where the index has a file, a fifo, a socket: not content
    return Entry(path, st.st_mode, st.st_size, st.st_mtime_ns)


def _git_paths(workspace: Path) -> list[tuple[bytes, str | None]]:
    """Tracked and untracked-not-ignored paths under `workspace`; a submodule's path comes
    with its commit."""
    staged = git(["ls-files", "-z", "--stage"], workspace)
    tracked: dict[bytes, str | None] = {}
    for record in staged.split(b"\0"):
        if record:
            info, _, path = record.partition(b"\t")
            mode, oid, _ = info.split(b" ", 2)  # a path in conflict shows up to 3 times
            tracked[path] = oid.decode() if mode == b"160000" else None
    others = git(["ls-files", "-z", "--others", "--exclude-standard"], workspace)
    # An untracked nested repository shows as "dir/": git keeps none of it, nor do we.
    untracked = [(p, None) for p in others.split(b"\0") if p and not p.endswith(b"/")]
    return [*tracked.items(), *untracked]


def walk(
    workspace: Path, patterns: tuple[str, ...], store: bytes | None
) -> Iterator[tuple[bytes, str | None]]:
    """Every file and symlink below `workspace`, links never followed; a directory left
    out is not entered."""
    root = os.fsencode(workspace)
    pending = [b""]
    while pending:
        relative = pending.pop()
        with os.scandir(os.path.join(root, relative) if relative else root) as scan:
            for item in scan:
                path = relative + item.name
                if item.is_dir(follow_symlinks=False):
                    if not skipped(path, store) and not excluded(path, patterns):
                        pending.append(path + b"/")
                else:
                    yield path, None


def total_size(entries: Iterable[Entry]) -> int:
    return sum(e.size for e in entries if stat.S_ISREG(e.mode))
