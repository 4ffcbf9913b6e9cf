"""The workspace copy a `single` node works on: the selected files (selection.py) copied
once into the run's directory, symlinks kept as links, modes and mtimes kept, handed to
the sandbox user; the baseline for the patch is a scratch git index of the same bytes
(scratch.py), hashed while they are copied, so nothing is read twice."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..mounts import BindMount
from ..policy import Policy
from ..sandbox import Sandbox
from ..store import home, keep_out_of_git, run_dir
from .request import WORKSPACE, refused
from .scratch import init_scratch, missing_objects, scratch_git, set_index, write_blob
from .selection import GITLINK, Entry, GitRepo, find_repo, select, total_size

CHUNK = 1 << 20
PROGRESS_AFTER = 1.0  # seconds: a copy faster than this says nothing


@dataclass(frozen=True)
class WorkspaceCopy:
    workspace: Path  # the user's directory (never written by the run)
    working: Path  # the copy mounted at /workspace
    gitdir: Path  # the scratch repository holding the baseline
    repo: GitRepo | None  # the user's repository, if the workspace is in one
    excludes: tuple[str, ...]
    entries: tuple[Entry, ...]  # what was copied, as lstat saw it: "did it change since?"
    baseline: str  # the scratch repository's tree of the copy as the node got it
    stamps: dict[bytes, Stamp]  # each copied file's stamp: unchanged ones are not hashed again

    @property
    def base(self) -> Path:
        return self.working.parent


class Progress:
    """A line on stderr once a copy has taken more than a second, then at most twice a
    second (redrawn in place on a terminal), and a last line when done."""

    def __init__(self, files: int, size: int, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.files, self.size, self.clock = files, size, clock
        self.stream = stream if stream is not None else sys.stderr
        self.began = clock()
        self.shown = 0.0  # when a line was last shown (0: never)

    def update(self, files: int, size: int) -> None:
        now = self.clock()
        if now - self.began < PROGRESS_AFTER or now - self.shown < 0.5:
            return
        self.shown = now
        mib = f"{size >> 20}/{self.size >> 20} MiB"
        self._line(f"copying the workspace: {files}/{self.files} files, {mib}", last=False)

    def done(self) -> None:
        if self.shown:
            took = self.clock() - self.began
            mib = f"{self.size >> 20} MiB"
            self._line(f"copied the workspace: {self.files} files, {mib} in {took:.1f} s", True)

    def _line(self, text: str, last: bool) -> None:
        if self.stream.isatty():  # one line, redrawn
            self.stream.write("\r\x1b[K" + text + ("\n" if last else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


class CopyStopped(Exception):
    """The copy was stopped (the run was interrupted or failed meanwhile)."""


@dataclass(frozen=True)
class PendingCopy:
    """A copy decided but not yet made: what it will hold (selected and checked against
    the size limit), and its directory, which exists (empty) from here on, so a
    container can bind it before the copy fills it (a bind mount shows what is written
    into its source later)."""

    workspace: Path
    working: Path
    gitdir: Path
    repo: GitRepo | None
    excludes: tuple[str, ...]
    entries: list[Entry]
    user: str  # the policy's: the copy is made its own

    @property
    def base(self) -> Path:
        return self.working.parent


def copy_workspace(
    workspace: Path, run_id: str, policy: Policy, excludes: tuple[str, ...] = ()
) -> WorkspaceCopy:
    """Select, check the size, copy once (hashing), record the baseline."""
    return finish_copy(begin_copy(workspace, run_id, policy, excludes))


def begin_copy(
    workspace: Path, run_id: str, policy: Policy, excludes: tuple[str, ...] = ()
) -> PendingCopy:
    """Select and check the size; make the copy's (empty) directory."""
    repo = find_repo(workspace)
    entries = select(workspace, repo, excludes, store_inside(workspace))
    size = total_size(entries)
    if size > policy.limits.artifacts:
        raise refused(
            "--workspace", f"{workspace} holds {size} bytes, above the policy's artifacts limit"
        )
    base = run_dir(run_id) / "single"
    working, gitdir = base / "work", base / "git"
    pending = PendingCopy(workspace, working, gitdir, repo, excludes, entries, policy.user)
    try:
        base.mkdir(parents=True, exist_ok=True)
        keep_out_of_git()
        _make(working, _owner(policy.user))
    except BaseException:
        discard_copy(pending)
        raise
    return pending


def finish_copy(pending: PendingCopy, stop: threading.Event | None = None) -> WorkspaceCopy:
    """Copy (hashing) and record the baseline; complete and checked when it returns.
    `stop` set: CopyStopped at the next file. On any failure no half copy is left."""
    try:
        baseline, stamps = _copy_and_record(pending, stop or threading.Event())
    except BaseException:  # Ctrl-C, a stop or a failure: no half copy is left behind
        discard_copy(pending)
        raise
    return WorkspaceCopy(
        pending.workspace, pending.working, pending.gitdir, pending.repo, pending.excludes,
        tuple(pending.entries), baseline, stamps,
    )  # fmt: skip


def discard_copy(pending: PendingCopy | WorkspaceCopy) -> None:
    """Remove the copy and its scratch repository; the run's directory too when they
    were all it held."""
    shutil.rmtree(pending.base, ignore_errors=True)
    with contextlib.suppress(OSError):
        pending.base.parent.rmdir()


def _copy_and_record(pending: PendingCopy, stop: threading.Event) -> tuple[str, dict[bytes, Stamp]]:
    """Copy the entries into the (made) working directory; their baseline tree in the
    scratch repository (its id), and the copied files' stamps."""
    working, gitdir, entries = pending.working, pending.gitdir, pending.entries
    owner = _owner(pending.user)
    init_scratch(gitdir, working, pending.repo)
    algorithm = pending.repo.object_format if pending.repo is not None else "sha1"
    progress = Progress(len(entries), total_size(entries))
    records = _copy_all(pending.workspace, working, entries, owner, progress, algorithm, stop)
    if stop.is_set():
        raise CopyStopped
    _write_missing(gitdir, working, records)
    set_index(gitdir, working, (b"%o %s\t%s" % (m, o.encode(), p) for m, o, p in records))
    return scratch_git(gitdir, working, ["write-tree"]).decode().strip(), _stamps(
        working, gitdir, entries
    )


def _stamps(working: Path, gitdir: Path, entries: list[Entry]) -> dict[bytes, Stamp]:
    """The copied files' stamps, once the copy is final (owned, modes and times set).

    A ctime comes from a coarse clock (a tick of a few ms): a file written in the tick
    the copy ended could change again within it and keep its ctime. Those files get no
    stamp (they are hashed again at the end), as git treats "racily clean" entries."""
    marker = gitdir / "copied"
    marker.touch()
    end = os.lstat(marker).st_ctime_ns
    root = os.fsencode(working)
    stamps = {}
    for entry in entries:
        if entry.mode != GITLINK:
            st = os.lstat(os.path.join(root, entry.path))
            if st.st_ctime_ns < end:
                stamps[entry.path] = stamp(st)
    return stamps


def store_inside(workspace: Path) -> bytes | None:
    """The run store relative to the workspace, when it lies inside (it is never copied)."""
    store, root = os.path.realpath(home()), os.path.realpath(workspace)
    if store == root or not store.startswith(root.rstrip("/") + "/"):
        return None
    return os.fsencode(os.path.relpath(store, root))


Record = tuple[int, str, bytes]  # git mode, object id, path
Stamp = tuple[int, int, int, int]  # inode, ctime, size, mode of a file in the copy


def stamp(st: os.stat_result) -> Stamp:
    """What tells a file in the copy changed since we wrote it, without reading it: the
    node can set an mtime back, never a ctime (that takes CAP_SYS_TIME)."""
    return st.st_ino, st.st_ctime_ns, st.st_size, st.st_mode


def _copy_all(
    source: Path, target: Path, entries: list[Entry], owner: tuple[int, int] | None,
    progress: Progress, algorithm: str, stop: threading.Event,
) -> list[Record]:  # fmt: skip
    src, dst = os.fsencode(source), os.fsencode(target)
    made: set[bytes] = {b""}
    records: list[Record] = []
    copied = 0
    for count, entry in enumerate(entries, 1):
        if stop.is_set():  # checked per file: a stop lands within one file's copy
            raise CopyStopped
        _make_parents(dst, entry.path, made, owner)
        records.append(_copy_one(src, dst, entry, owner, algorithm))
        copied += entry.size
        progress.update(count, copied)
    progress.done()
    return records


def _make_parents(dst: bytes, path: bytes, made: set[bytes], owner: tuple[int, int] | None) -> None:
    parent = os.path.dirname(path)
    missing = []
    while parent not in made:
        missing.append(parent)
        parent = os.path.dirname(parent)
    for directory in reversed(missing):
        _make(Path(os.fsdecode(os.path.join(dst, directory))), owner)
        made.add(directory)


def _copy_one(
    src: bytes, dst: bytes, entry: Entry, owner: tuple[int, int] | None, algorithm: str
) -> Record:
    source, target = os.path.join(src, entry.path), os.path.join(dst, entry.path)
    if entry.mode == GITLINK:  # a submodule: an empty directory, its commit in the baseline
        _make(Path(os.fsdecode(target)), owner)
        return GITLINK, entry.gitlink or "", entry.path
    if stat.S_ISLNK(entry.mode):
        link = os.readlink(source)
        os.symlink(link, target)
        if owner is not None:
            os.lchown(target, *owner)
        return 0o120000, _oid(algorithm, link), entry.path
    return _copy_file(source, target, entry, owner, algorithm)


def _copy_file(
    source: bytes, target: bytes, entry: Entry, owner: tuple[int, int] | None, algorithm: str
) -> Record:
    try:
        reader = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as error:
        raise refused("--workspace", f"cannot read {os.fsdecode(source)}: {error.strerror}; "
                      "leave it out with --exclude") from error  # fmt: skip
    try:
        size = os.fstat(reader).st_size
        hasher = hashlib.new(algorithm, b"blob %d\0" % size)
        writer = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            written = 0
            while chunk := os.read(reader, CHUNK):
                os.write(writer, chunk)
                hasher.update(chunk)
                written += len(chunk)
            os.fchmod(writer, _mode(entry.mode, owner))
            if owner is not None:
                os.fchown(writer, *owner)
            os.utime(writer, ns=(entry.mtime_ns, entry.mtime_ns))
        finally:
            os.close(writer)
    finally:
        os.close(reader)
    if written != size:  # changed while we read it: hash what the copy holds
        with open(target, "rb") as copy:
            data = copy.read()
        oid = _oid(algorithm, data)
    else:
        oid = hasher.hexdigest()
    return (0o100755 if entry.mode & stat.S_IXUSR else 0o100644), oid, entry.path


def _oid(algorithm: str, data: bytes) -> str:
    return hashlib.new(algorithm, b"blob %d\0" % len(data) + data).hexdigest()


def _mode(mode: int, owner: tuple[int, int] | None) -> int:
    """The file's permissions without set-id bits; writable by the sandbox user when we
    cannot give it the file (not root)."""
    permissions = stat.S_IMODE(mode) & 0o777
    return permissions if owner is not None else permissions | 0o666


def _write_missing(gitdir: Path, working: Path, records: list[Record]) -> None:
    """Blobs the user's repository lacks (untracked or modified files, or no repository)."""
    blobs = {oid: (mode, path) for mode, oid, path in records if mode != GITLINK}
    for oid in missing_objects(gitdir, working, blobs):
        mode, path = blobs[oid]
        copy = os.path.join(os.fsencode(working), path)
        if mode == 0o120000:
            link = os.readlink(copy)
            write_blob(gitdir, oid, link, len(link))
        else:
            write_blob(gitdir, oid, Path(os.fsdecode(copy)), os.lstat(copy).st_size)


def _owner(user: str) -> tuple[int, int] | None:
    """The policy's user, when we can give it the copy (root); else None."""
    if os.geteuid() != 0:
        return None
    uid, gid = (int(part) for part in user.split(":"))
    return uid, gid


def hand_to_sandbox_user(root: Path, user: str) -> None:
    """A tree we made for the node (not the copy, which is made its own as it is
    written): the policy's user may write it."""
    owner = _owner(user)
    for directory, _, files in os.walk(root):
        for path in [Path(directory), *(Path(directory) / f for f in files)]:
            if owner is not None:
                os.lchown(path, *owner)
            elif not path.is_symlink():
                path.chmod(path.stat().st_mode | 0o666 | (0o111 if path.is_dir() else 0))


def _make(directory: Path, owner: tuple[int, int] | None) -> None:
    """The node runs as the policy's user: let it write its copy (and only its copy)."""
    directory.mkdir(mode=0o755)
    if owner is not None:
        os.chown(directory, *owner)
    else:
        directory.chmod(0o777)


def with_workspace(sandbox: Sandbox, copy: PendingCopy | WorkspaceCopy) -> Sandbox:
    """The copy bound read-write at /workspace. Its settings depend only on where the
    copy is made, never on what it holds (no `.git`, no run store, no socket or special
    file is ever copied: selection.py), so the mount is the same before and after it is
    filled, and a container may be created with it first (`single` does, see run_single)."""
    # Resolved, as admitted sources are: checked again to go through no symlink at start.
    mount = BindMount(os.path.realpath(copy.working), WORKSPACE, read_only=False)
    return dataclasses.replace(sandbox, mounts=(*sandbox.mounts, mount))
