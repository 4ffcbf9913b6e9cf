"""The node's changes: its copy staged into the scratch index (scratch.py) and diffed
against the baseline tree recorded at copy time. What git would not keep stays out:
files ignored by the workspace's ignore rules, `--exclude`, `.git`, and anything that is
not a file or a symlink. Paths in the patch are relative to where it applies: the
repository's root (a workspace in a subdirectory has its prefix), else the workspace."""

from __future__ import annotations

import hashlib
import os
import stat
from typing import Any

from ..store import run_dir
from .gitcommand import git_output
from .request import NODE
from .scratch import scratch_git, untracked
from .selection import GITLINK, beyond_link, excluded, skipped, walk
from .workspace import WorkspaceCopy, stamp

PATCH = "changes.patch"


def changes(copy: WorkspaceCopy) -> bytes:
    """The patch from the baseline to the copy as the node left it (b"": no change)."""
    _stage(copy)
    after = scratch_git(copy.gitdir, copy.working, ["write-tree"]).decode().strip()
    prefix = os.fsdecode(copy.repo.prefix) if copy.repo is not None else ""
    return scratch_git(
        copy.gitdir,
        copy.working,
        [
            "diff", "--binary", "--no-renames", "--no-ext-diff", "--no-textconv",
            "--no-color", "--ignore-submodules=none",
            f"--src-prefix=a/{prefix}", f"--dst-prefix=b/{prefix}",
            copy.baseline, after,
        ],
    )  # fmt: skip


def write_patch(copy: WorkspaceCopy, run_id: str) -> dict[str, Any] | None:
    """The changes as artifacts/single/changes.patch; None (and no file) when none."""
    patch = changes(copy)
    if not patch:
        return None
    target = run_dir(run_id) / "artifacts" / NODE / PATCH
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(patch)
    return {
        "name": PATCH,
        "path": str(target),
        "bytes": len(patch),
        "sha256": hashlib.sha256(patch).hexdigest(),
    }


def _stage(copy: WorkspaceCopy) -> None:
    """The index made to match the copy: files gone are removed, changed or new ones
    added (a file whose stamp is as we left it is not read again). git itself never
    follows a symlink here; we check the leading directories before asking it anything
    about a path."""
    root = os.fsencode(copy.working)
    listed = scratch_git(copy.gitdir, copy.working, ["ls-files", "-z", "--stage"])
    tracked = {}
    for record in listed.split(b"\0"):
        if record:
            info, _, path = record.partition(b"\t")
            tracked[path] = int(info.split(b" ", 1)[0], 8)
    links: dict[bytes, bool] = {}
    now = {p: _content(root, p, links) for p, mode in tracked.items() if mode != GITLINK}
    gone = [p for p, st in now.items() if st is None]
    changed = [p for p, st in now.items() if st is not None and stamp(st) != copy.stamps.get(p)]
    new = [p for p in _untracked(copy, set(tracked)) if _content(root, p, links)]
    if gone:
        scratch_git(copy.gitdir, copy.working, ["update-index", "-z", "--force-remove",
                    "--stdin"], b"".join(p + b"\0" for p in gone))  # fmt: skip
    if changed or new:
        scratch_git(copy.gitdir, copy.working, ["update-index", "-z", "--add", "--replace",
                    "--stdin"], b"".join(p + b"\0" for p in [*changed, *new]))  # fmt: skip


def _untracked(copy: WorkspaceCopy, tracked: set[bytes]) -> list[bytes]:
    """New paths in the copy that the workspace's rules would keep."""
    if copy.repo is None:
        found = [p for p, _ in walk(copy.working, copy.excludes, None) if p not in tracked]
    else:
        found = untracked(copy.gitdir, copy.working)
        found = _not_ignored_above(copy, found)
    return [p for p in found if not skipped(p, None) and not excluded(p, copy.excludes)]


def _not_ignored_above(copy: WorkspaceCopy, paths: list[bytes]) -> list[bytes]:
    """A workspace in a subdirectory: the .gitignore files of the directories above it
    (not in the copy), info/exclude and core.excludesFile still apply; the user's
    repository says which paths they ignore. A path it cannot judge (its directory is a
    symlink in the user's tree: git would refuse it) is kept."""
    assert copy.repo is not None
    if not copy.repo.prefix or not paths:
        return paths
    real = os.fsencode(copy.workspace)
    judged = [p for p in paths if not _link_along(real, p)]
    out = git_output(
        ["check-ignore", "--no-index", "-z", "--stdin"],
        copy.repo.top,
        stdin=b"".join(copy.repo.prefix + p + b"\0" for p in judged),
        ok=(0, 1),  # 1: none ignored
    )
    ignored = {p[len(copy.repo.prefix) :] for p in out.split(b"\0") if p}
    return [p for p in paths if p not in ignored]


def _link_along(root: bytes, path: bytes) -> bool:
    """Whether a directory along `path` exists in `root` as something else than a
    directory (a symlink): git refuses to look past it. Missing ones are fine."""
    parts = path.split(b"/")[:-1]
    for n in range(1, len(parts) + 1):
        try:
            mode = os.lstat(os.path.join(root, b"/".join(parts[:n]))).st_mode
        except FileNotFoundError:
            return False
        except OSError:
            return True
        if not stat.S_ISDIR(mode):
            return True
    return False


def _content(root: bytes, path: bytes, links: dict[bytes, bool]) -> os.stat_result | None:
    """lstat of a file or a symlink reached without following a symlink, else None."""
    if beyond_link(root, path, links):
        return None
    try:
        st = os.lstat(os.path.join(root, path))
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode) else None
