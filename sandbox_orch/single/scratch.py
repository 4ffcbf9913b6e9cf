"""A scratch git repository next to the workspace copy: its index is the copy as it was
handed to the node (the baseline), so the node's changes are one `git diff --cached` away
and the copy is made once, not twice.

The copy is untrusted once the node has run (it may plant .gitattributes, nested
repositories, hooks), so git runs here with no system or global configuration (no filters,
no textconv, no fsmonitor), and with every GIT_* variable of ours dropped. Blobs the
user's repository already holds are borrowed from it through `objects/info/alternates`
(read-only): only content git does not have yet is written.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable
from pathlib import Path

from .gitcommand import git_output
from .selection import GitRepo

SAFE_CONFIG = (
    "core.autocrlf=false",
    "core.filemode=true",
    "core.symlinks=true",
    "core.fsmonitor=false",
    f"core.excludesFile={os.devnull}",
    "core.looseCompression=1",
    "advice.addEmbeddedRepo=false",
    "gc.auto=0",
)


_LOCATION = ("GIT_DIR", "GIT_WORK_TREE")


def scratch_env(gitdir: Path, worktree: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_DIR=str(gitdir),
        GIT_WORK_TREE=str(worktree),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_LITERAL_PATHSPECS="1",
        GIT_TERMINAL_PROMPT="0",
    )
    return env


def scratch_git(
    gitdir: Path, worktree: Path, args: Iterable[str], stdin: bytes | None = None
) -> bytes:
    settings = [arg for setting in SAFE_CONFIG for arg in ("-c", setting)]
    return git_output([*settings, *args], worktree, scratch_env(gitdir, worktree), stdin)


def init_scratch(gitdir: Path, worktree: Path, repo: GitRepo | None) -> None:
    """An empty repository whose ignore rules are the user's (info/exclude, excludesFile;
    the copy's .gitignore files apply by themselves), and whose objects include the user's
    repository's."""
    fmt = repo.object_format if repo is not None else "sha1"
    env = {k: v for k, v in scratch_env(gitdir, worktree).items() if k not in _LOCATION}
    git_output(["init", "-q", "--bare", f"--object-format={fmt}", str(gitdir)], env=env)
    # Their patterns are anchored at the repository's root: for a workspace in a
    # subdirectory the user's repository judges new paths instead (changes.py).
    user = repo.excludes if repo is not None and not repo.prefix else ()
    ignores = [p.read_bytes() for p in user]
    (gitdir / "info").mkdir(exist_ok=True)
    (gitdir / "info" / "exclude").write_bytes(b"\n".join([*ignores, b""]))
    if repo is not None:
        (gitdir / "objects" / "info" / "alternates").write_text(f"{repo.objects}\n")


def missing_objects(gitdir: Path, worktree: Path, oids: Iterable[str]) -> set[str]:
    """The object ids neither the scratch repository nor the user's holds."""
    wanted = "".join(f"{oid}\n" for oid in oids).encode()
    out = scratch_git(gitdir, worktree, ["cat-file", "--batch-check=%(objectname)"], wanted)
    return {line.split()[0] for line in out.decode().splitlines() if line.endswith(" missing")}


def write_blob(gitdir: Path, oid: str, source: Path | bytes, size: int) -> None:
    """A loose blob object (`source`: a file to stream, or a symlink's target)."""
    target = gitdir / "objects" / oid[:2] / oid[2:]
    target.parent.mkdir(exist_ok=True)
    packer = zlib.compressobj(1)
    with open(f"{target}.tmp", "wb") as out:
        out.write(packer.compress(b"blob %d\0" % size))
        if isinstance(source, bytes):
            out.write(packer.compress(source))
        else:
            with open(source, "rb") as data:
                while chunk := data.read(1 << 20):
                    out.write(packer.compress(chunk))
        out.write(packer.flush())
    os.replace(f"{target}.tmp", target)


def set_index(gitdir: Path, worktree: Path, records: Iterable[bytes]) -> None:
    """The baseline index from `MODE SP OID TAB PATH` records (no hashing again)."""
    scratch_git(
        gitdir,
        worktree,
        ["update-index", "-z", "--index-info"],
        b"".join(r + b"\0" for r in records),
    )


def untracked(gitdir: Path, worktree: Path) -> list[bytes]:
    """Paths in the copy the index lacks and no ignore rule covers (a nested repository,
    shown as "dir/", is left out as git leaves it out)."""
    out = scratch_git(gitdir, worktree, ["ls-files", "-z", "--others", "--exclude-standard"])
    return [p for p in out.split(b"\0") if p and not p.endswith(b"/")]
