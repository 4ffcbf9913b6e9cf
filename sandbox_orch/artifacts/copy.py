"""The copy of an artifact to the host, from either volume store, within a budget.

Either copy writes regular files and directories only: symlinks, hard links, devices,
FIFOs and sockets are refused and recorded, never followed and never opened for reading
(a FIFO cannot block the copy).

What reaches the host disk is bounded by the artifact's `Budget`, enforced while the copy
streams, never from a size read earlier: bytes of content (a sparse file's holes arrive,
or are read, as zeros, so its apparent size is what counts), entries (files and
directories: empty ones cost a tmpfs nothing, but the host an inode each) and depth. The
first entry that would go past the budget stops the copy: that entry is not kept (a file
cut short is removed, never left partial), nothing after it is copied, and the result
says so (`complete` is false, `stopped` says where and why).
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from ..backend import inode_limit
from ..units import format_size

CHUNK = 1 << 20
# Directories deeper than this are refused: `copy_tree` holds one descriptor per level.
MAX_DEPTH = 128
# Refusals listed per artifact; past this they are only counted (a node may make many).
MAX_LISTED = 100
ONLY_PLAIN = "refused (only files and directories)"
DEFAULT_CAP = 1024**3


@dataclass(frozen=True)
class Budget:
    """What one artifact's copy may write on the host."""

    bytes: int  # file content, holes included
    entries: int  # files and directories below the artifact's root, refused ones included

    @classmethod
    def for_cap(cls, cap: int) -> Budget:
        """The budget of a volume capped at `cap`: its size, and its inodes but the root."""
        return cls(cap, inode_limit(cap) - 1)


@dataclass
class Extracted:
    """What one artifact's copy produced."""

    files: int = 0
    bytes: int = 0
    digests: list[tuple[str, str]] = field(default_factory=list)  # (relative path, sha256)
    refused: list[str] = field(default_factory=list)  # at most MAX_LISTED
    unlisted: int = 0  # refusals past MAX_LISTED
    stopped: str | None = None  # why the copy stopped short of the whole artifact

    @property
    def complete(self) -> bool:
        return self.stopped is None

    @property
    def sha256(self) -> str:
        """One digest for the whole artifact: over its sorted (path, file digest) pairs."""
        listing = "".join(f"{path}\0{digest}\n" for path, digest in sorted(self.digests))
        return hashlib.sha256(listing.encode()).hexdigest()

    def problems(self) -> list[str]:
        """Every refusal and the stop, as violation details (relative to the artifact)."""
        found = list(self.refused)
        if self.unlisted:
            found.append(f"... and {self.unlisted} more refused")
        if self.stopped is not None:
            found.append(self.stopped)
        return found


class _Stopped(Exception):
    """The budget is spent: the copy ends here."""


class _Writer:
    """Writes one artifact under `destination` and keeps its budget."""

    def __init__(self, destination: Path, budget: Budget) -> None:
        self.destination = destination
        self.budget = budget
        self.result = Extracted()
        self.entries = 0
        self.spent = 0  # bytes written, or read through without writing (extract)

    def enter(self, relative: PurePosixPath | str) -> None:
        """Count one more entry; stop past the budget."""
        self.entries += 1
        if self.entries > self.budget.entries:
            self.stop(relative, "one entry more than the artifact may hold")

    def charge(self, relative: PurePosixPath, size: int) -> None:
        """Spend `size` bytes (a file's declared size, before any is written)."""
        if self.spent + size > self.budget.bytes:
            self.stop(relative, f"{_size(size)} (holes included) would pass the artifact's limit")
        self.spent += size

    def stop(self, relative: PurePosixPath | str, why: str) -> None:
        limit = f"{_size(self.budget.bytes)}, {self.budget.entries} files and directories"
        self.result.stopped = (
            f"{relative}: {why} ({limit}); the copy stopped here: neither this nor anything "
            "after it was copied"
        )
        raise _Stopped

    def refuse(self, why: str) -> None:
        if len(self.result.refused) < MAX_LISTED:
            self.result.refused.append(why)
        else:
            self.result.unlisted += 1

    def mkdir(self, relative: PurePosixPath) -> None:
        try:
            (self.destination / relative).mkdir(mode=0o755, exist_ok=True)  # never its parents
        except OSError as error:
            self.refuse(f"{relative}/: {error.strerror}")

    def write(self, source: BinaryIO, relative: PurePosixPath, declared: int) -> None:
        """Write one file's content, never over anything already there, never past the
        budget: `declared` is charged first, and the bytes that really come are counted."""
        before = self.spent
        self.charge(relative, declared)
        self.spent = before  # from here on, what is read is what counts
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        path = self.destination / relative
        try:
            descriptor = os.open(path, flags, 0o644)
        except OSError as error:
            self.spent = before + declared  # not written, but read through (extract)
            self.refuse(f"{relative}: {error.strerror}")
            return
        digest, size = hashlib.sha256(), 0
        try:
            with os.fdopen(descriptor, "wb") as target:
                while chunk := source.read(CHUNK):
                    if self.spent + len(chunk) > self.budget.bytes:
                        self.stop(
                            relative, f"{_size(size + len(chunk))} read: past the artifact's limit"
                        )
                    digest.update(chunk)
                    target.write(chunk)
                    size += len(chunk)
                    self.spent += len(chunk)
        except BaseException:
            path.unlink()  # never a partial file: past the budget, or the stream cut short
            raise
        self.result.files += 1
        self.result.bytes += size
        self.result.digests.append((str(relative), digest.hexdigest()))


def _size(count: int) -> str:
    return format_size(count) if count >= 1024 else f"{count} bytes"


def extract(stream: BinaryIO, destination: Path, budget: Budget | None = None) -> Extracted:
    """Write the regular files and directories of a tar stream under `destination`.

    Everything else is refused with a reason. Paths are checked again here (absolute or
    `..` names are refused), and files are created with O_EXCL|O_NOFOLLOW, so nothing in
    the archive can make this write outside `destination`. A file's size in its header
    is charged before its data is read, so a header claiming a huge size stops the copy
    at once; the caller closes the stream.
    """
    writer = _Writer(destination, budget or Budget.for_cap(DEFAULT_CAP))
    destination.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=stream, mode="r|", tarinfo=_Header) as archive:
            for member in archive:
                _extract_member(archive, member, writer)
    except _Stopped:
        pass
    except tarfile.TarError as error:  # the engine's archive, cut or malformed
        writer.result.stopped = f"the engine's archive could not be read ({error}): copy stopped"
    return writer.result


class _Header(tarfile.TarInfo):
    """A member's header. tarfile takes an archive that stops between two members for a
    shorter one; without its end-of-archive blocks, it is a stream cut short."""

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tarfile_)
        except (tarfile.EmptyHeaderError, tarfile.TruncatedHeaderError) as error:
            raise tarfile.ReadError(f"it ends without its end-of-archive blocks: {error}") from None


def _extract_member(archive: tarfile.TarFile, member: tarfile.TarInfo, writer: _Writer) -> None:
    relative = _inside(member.name)
    if relative == PurePosixPath("."):
        return  # the artifact's root
    writer.enter(relative or member.name)
    if relative is None:
        writer.refuse(f"{member.name!r}: a path outside the artifact")
        if member.isreg():  # its data is read through to reach the next member
            writer.charge(PurePosixPath(member.name), member.size)
    elif len(relative.parts) >= MAX_DEPTH + (0 if member.isdir() else 1):
        writer.refuse(f"{relative}: deeper than {MAX_DEPTH} directories, refused")
        if member.isreg():
            writer.charge(relative, member.size)
    elif member.isdir():
        writer.mkdir(relative)
    elif member.isreg():
        source = archive.extractfile(member)
        assert source is not None  # a regular file always has data
        writer.write(source, relative, member.size)
    else:
        writer.refuse(f"{relative}: {_kind(member)}, {ONLY_PLAIN}")


def copy_tree(source: Path, destination: Path, budget: Budget | None = None) -> Extracted:
    """Copy the regular files and directories below `source` (a volume mounted here) to
    `destination`, refusing everything else with a reason, as `extract` does.

    Nothing is followed: each directory is opened relative to its parent with O_NOFOLLOW,
    each file with O_NOFOLLOW|O_NONBLOCK (never blocking on a FIFO) and checked to be the
    regular file that was listed. Of several names for one inode, the first (in sorted
    order) is copied and the others refused as hard links, as in an archive.
    """
    destination.mkdir(parents=True, exist_ok=True)
    copy = _TreeCopy(_Writer(destination, budget or Budget.for_cap(DEFAULT_CAP)))
    root = os.open(source, _DIRECTORY_FLAGS)
    try:
        copy.directory(root, PurePosixPath("."), 1)
    except _Stopped:
        pass
    finally:
        os.close(root)
    return copy.writer.result


_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class _TreeCopy:
    """One `copy_tree`: its writer, and the inodes already copied."""

    def __init__(self, writer: _Writer) -> None:
        self.writer = writer
        self.seen: dict[tuple[int, int], str] = {}  # (device, inode) -> first name

    def directory(self, descriptor: int, relative: PurePosixPath, depth: int) -> None:
        with os.scandir(descriptor) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
        for entry in entries:
            path, info = relative / entry.name, entry.stat(follow_symlinks=False)
            self.writer.enter(path)
            if stat.S_ISDIR(info.st_mode):
                self.subdirectory(descriptor, entry.name, path, depth + 1)
            elif stat.S_ISLNK(info.st_mode):
                target = os.readlink(entry.name, dir_fd=descriptor)
                self.writer.refuse(f"{path}: a symlink to {target!r}, {ONLY_PLAIN}")
            elif not stat.S_ISREG(info.st_mode):
                self.writer.refuse(f"{path}: {_mode_kind(info.st_mode)}, {ONLY_PLAIN}")
            elif (info.st_dev, info.st_ino) in self.seen:
                first = self.seen[(info.st_dev, info.st_ino)]
                self.writer.refuse(f"{path}: a hard link to {first!r}, {ONLY_PLAIN}")
            else:
                if info.st_nlink > 1:
                    self.seen[(info.st_dev, info.st_ino)] = str(path)
                self.file(descriptor, entry.name, info, path)

    def subdirectory(self, parent: int, name: str, path: PurePosixPath, depth: int) -> None:
        if depth > MAX_DEPTH:
            self.writer.refuse(f"{path}/: deeper than {MAX_DEPTH} directories, refused")
            return
        self.writer.mkdir(path)
        try:
            descriptor = os.open(name, _DIRECTORY_FLAGS, dir_fd=parent)
        except OSError as error:
            self.writer.refuse(f"{path}/: {error.strerror}")
            return
        try:
            self.directory(descriptor, path, depth)
        finally:
            os.close(descriptor)

    def file(self, parent: int, name: str, listed: os.stat_result, path: PurePosixPath) -> None:
        try:
            descriptor = os.open(name, _FILE_FLAGS, dir_fd=parent)
        except OSError as error:
            self.writer.refuse(f"{path}: {error.strerror}")
            return
        with os.fdopen(descriptor, "rb", buffering=0) as source:
            opened = os.fstat(descriptor)
            if (opened.st_dev, opened.st_ino) != (listed.st_dev, listed.st_ino):
                self.writer.refuse(f"{path}: replaced while being copied, refused")
                return
            self.writer.write(source, path, opened.st_size)


def apparent_size(root: Path) -> int:
    """The sum of st_size below `root` (each inode once, as `du --apparent-size` counts),
    down to the depth the copy takes. Holes count: a sparse file is as large as it says."""
    total, seen = 0, set()
    stack = [(root, 1)]
    while stack:
        directory, depth = stack.pop()
        try:
            listing = list(os.scandir(directory))
        except OSError:
            continue  # what cannot be listed is not copied either
        for entry in listing:
            info = entry.stat(follow_symlinks=False)
            if (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
            total += info.st_size
            if stat.S_ISDIR(info.st_mode) and depth < MAX_DEPTH:
                stack.append((Path(entry.path), depth + 1))
    return total


def _inside(name: str) -> PurePosixPath | None:
    """The member's path below the artifact root (the archive's first component)."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        return None
    # The engine names entries after the archived directory; that directory itself is ".".
    return PurePosixPath(*path.parts[1:])


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"a symlink to {member.linkname!r}"
    if member.islnk():
        return f"a hard link to {member.linkname!r}"
    if member.isfifo():
        return "a FIFO"
    if member.ischr() or member.isblk():
        return "a device"
    return "not a regular file"


def _mode_kind(mode: int) -> str:
    """`_kind` for an lstat mode (symlinks aside: their target is read where they are)."""
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"
