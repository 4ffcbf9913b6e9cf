"""A node's inputs and read-only mounts, delivered into its own pod before it runs.

Its Job has a `deliver` init container (job.py) that mounts their emptyDirs read-write
and waits on its gate. `start` waits for it to run, then streams each from this host
into it over the exec API (`tar -x` from the exec's stdin), then writes "go" into its
gate; it exits 0 and the node's container starts, seeing them read-only. The node's own
code never touches them on the way in.

What is sent: for an input, the producer's copy on this host (artifacts/volumes.py: the
"pod" store's view), regular files and directories that our `extract` made; for a
mount, its admitted source (admission walked it: no socket inside). The archive is made
by a walk that follows nothing: a symlink goes as a symlink (resolved in the pod, where
it reaches only the pod's own files, as a bind mount's would), a file is opened with
O_NOFOLLOW, and anything else (a device, a FIFO) is refused. A mount's masks (the run
store inside its source) and other file systems in it go as empty directories, as the
bind mount on Docker shows them. What the node's user could not read through a bind
mount stays out: this host reads as whoever runs sandbox-orch, but in the pod the copy
belongs to the node's user, so a file it may not read is left out and a directory it may
not list goes empty. Modes go without set-id bits, owners and times not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import stat
import tarfile
import threading
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...planning import PlannedNode
from ..base import BackendError, ContainerSpec
from .security import uid_gid
from .volumes import GATE

DELIVER = "deliver"  # the init container's name (job.py)
CHUNK = 1 << 16  # bytes per piece of an archive on its way
PENDING_CHUNKS = 16  # pieces an archive may be ahead of the exec that sends it
RELEASE_ARGV = ["sh", "-c", 'echo go > "$1"', "sh", GATE]


@dataclass(frozen=True)
class Delivery:
    source: Path  # a directory on this host
    target: str  # where the node's container sees it (an input's or a mount's path)
    hidden: tuple[str, ...] = ()  # paths relative to both, sent as empty directories
    # (uid, gid) of the node: only what it may read goes (None: all, our own copies)
    reader: tuple[int, int] | None = None


def deliveries(spec: ContainerSpec, node: PlannedNode) -> list[Delivery]:
    """What goes into the node's pod: each of its inputs that has a copy on this host
    (an input whose producer never ran has none, and stays an empty directory), and each
    of its mounts, which must be read-only (a change in the pod could not come back)."""
    inputs = {needed.path for needed in node.inputs}
    found = []
    for volume in spec.volumes:
        if volume.target not in inputs:
            continue  # its own artifacts: emptyDirs of its own pod
        if volume.host_bind is None:
            raise BackendError(f"input at {volume.target} has no copy on this host to deliver")
        found.append(Delivery(Path(volume.host_bind.source), volume.target))
    for mount in spec.mounts:
        if not mount.read_only:
            raise BackendError(f"mount at {mount.target} is read-write: not on a cluster")
        hidden = tuple(m[len(mount.target.rstrip("/")) + 1 :] for m in mount.masks)
        found.append(Delivery(Path(mount.source), mount.target, hidden, uid_gid(spec.user)))
    return found


def extract_argv(target: str) -> list[str]:
    """`tar` in the deliver container, unpacking its stdin into `target` (an emptyDir)."""
    return ["tar", "-x", "-f", "-", "-C", target]


def deliver_state(pod: Mapping[str, Any]) -> tuple[str, int | None]:
    """("waiting" | "running" | "terminated", its exit code if terminated)."""
    for status in (pod.get("status") or {}).get("initContainerStatuses") or []:
        if status.get("name") != DELIVER:
            continue
        state = status.get("state") or {}
        if "terminated" in state:
            code = (state["terminated"] or {}).get("exitCode")
            return "terminated", code if isinstance(code, int) else None
        if "running" in state:
            return "running", None
    return "waiting", None


async def archive(
    source: Path, hidden: tuple[str, ...] = (), reader: tuple[int, int] | None = None
) -> AsyncIterator[bytes]:
    """The directory's content as a tar stream (entries relative to it), made in a
    thread and handed over in CHUNK pieces, at most PENDING_CHUNKS ahead; BackendError
    for anything but regular files, directories and symlinks. `hidden`: directories
    (relative) sent empty; `reader`: only what this (uid, gid) may read is sent."""
    pieces: queue.Queue[bytes | BaseException | None] = queue.Queue(PENDING_CHUNKS)
    stop = threading.Event()
    maker = threading.Thread(
        target=_make,
        args=(_Walk(frozenset(hidden), reader), source, pieces, stop),
        name=f"archive {source}",
        daemon=True,
    )
    maker.start()
    try:
        while True:
            piece = await asyncio.to_thread(pieces.get)
            if piece is None:
                return
            if isinstance(piece, BaseException):
                raise piece
            yield piece
    finally:
        # Abandoned or done: the maker stops at its next piece; a put it is blocked in
        # finds room in the emptied queue.
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                pieces.get_nowait()


class _Pieces:
    """A file object for tarfile's writes: CHUNK pieces into the queue."""

    def __init__(self, pieces: queue.Queue[Any], stop: threading.Event) -> None:
        self.pieces, self.stop, self.held = pieces, stop, bytearray()

    def write(self, data: bytes) -> int:
        self.held += data
        while len(self.held) >= CHUNK:
            self._put(bytes(self.held[:CHUNK]))
            del self.held[:CHUNK]
        return len(data)

    def flush_all(self) -> None:
        if self.held:
            self._put(bytes(self.held))
            self.held.clear()

    def _put(self, piece: Any) -> None:
        if self.stop.is_set():
            raise _Abandoned
        self.pieces.put(piece)


class _Abandoned(Exception):
    """Whoever read the archive stopped: stop making it."""


def _make(walk: _Walk, source: Path, pieces: queue.Queue[Any], stop: threading.Event) -> None:
    out = _Pieces(pieces, stop)
    try:
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            walk.add(tar, os.stat(source).st_dev, source, "")
        out.flush_all()
        out._put(None)
    except _Abandoned:
        pass
    except (OSError, BackendError) as error:
        if not stop.is_set():
            pieces.put(error if isinstance(error, BackendError) else BackendError(str(error)))
    finally:
        if stop.is_set():
            # A read of the queue abandoned with the archive may still wait in its worker
            # thread, which the event loop waits for as it closes: it gets an end too. (A
            # read waits only on an empty queue: when it is full, none does.)
            with contextlib.suppress(queue.Full):
                pieces.put_nowait(None)


@dataclass(frozen=True)
class _Walk:
    hidden: frozenset[str]  # relative paths sent as empty directories
    reader: tuple[int, int] | None  # (uid, gid): only what it may read is sent

    def add(self, tar: tarfile.TarFile, device: int, directory: Path, prefix: str) -> None:
        """`device`: the source's file system (others are not entered)."""
        with os.scandir(directory) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                self._entry(tar, device, entry, f"{prefix}{entry.name}")

    def _entry(self, tar: tarfile.TarFile, device: int, entry: os.DirEntry[str], name: str) -> None:
        info = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            tar.addfile(_header(name, tarfile.DIRTYPE, info.st_mode))
            entered = name not in self.hidden and info.st_dev == device
            if entered and self._may(info, LIST):
                self.add(tar, device, Path(entry.path), f"{name}/")
        elif stat.S_ISREG(info.st_mode):
            if not self._may(info, READ):
                return
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as file:
                header = _header(name, tarfile.REGTYPE, info.st_mode)
                header.size = os.fstat(file.fileno()).st_size
                tar.addfile(header, file)
        elif stat.S_ISLNK(info.st_mode):
            header = _header(name, tarfile.SYMTYPE, 0o777)
            header.linkname = os.readlink(entry.path)
            tar.addfile(header)
        else:
            raise BackendError(f"{name}: not a regular file, directory or symlink")

    def _may(self, info: os.stat_result, wanted: int) -> bool:
        """Whether the reader's permission bits (as the kernel picks them: the owner's,
        else the group's, else the others') grant all of `wanted` (as others' bits)."""
        if self.reader is None:
            return True
        uid, gid = self.reader
        shift = 6 if info.st_uid == uid else 3 if info.st_gid == gid else 0
        return (info.st_mode >> shift) & wanted == wanted


READ, LIST = 0o4, 0o5  # others' bits: read; read and search (a directory's listing)


def _header(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    """Only what the node needs: no owner, no times of the host, no set-id bits."""
    info = tarfile.TarInfo(name)
    info.type, info.mode = kind, stat.S_IMODE(mode) & 0o755
    return info
