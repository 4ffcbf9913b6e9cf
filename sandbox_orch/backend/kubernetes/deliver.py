"""A consumer's inputs, delivered into its own pod before its node runs.

Its Job has a `deliver` init container (job.py) that mounts the inputs' emptyDirs
read-write and waits on its gate. `start` waits for it to run, then streams each input
from this host into it over the exec API (`tar -x` from the exec's stdin), then writes
"go" into its gate; it exits 0 and the node's container starts, seeing the inputs
read-only. The node's own code never touches the copy on the way in.

What is sent is the producer's copy on this host (artifacts/volumes.py: the "pod"
store's view), which our `extract` made of regular files and directories only. It is
archived here with the same rule: anything else (a link, a device, a FIFO) is refused,
and no path is followed (O_NOFOLLOW, entries from a walk that never enters a link).
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
from .volumes import GATE

DELIVER = "deliver"  # the init container's name (job.py)
CHUNK = 1 << 16  # bytes per piece of an archive on its way
PENDING_CHUNKS = 16  # pieces an archive may be ahead of the exec that sends it
RELEASE_ARGV = ["sh", "-c", 'echo go > "$1"', "sh", GATE]


@dataclass(frozen=True)
class Delivery:
    source: Path  # a directory on this host
    target: str  # where the consumer's container sees it (an input's path)


def deliveries(spec: ContainerSpec, node: PlannedNode) -> list[Delivery]:
    """What goes into the consumer's pod: each of its inputs that has a copy on this host
    (an input whose producer never ran has none, and stays an empty directory)."""
    inputs = {needed.path for needed in node.inputs}
    found = []
    for mount in spec.volumes:
        if mount.target not in inputs:
            continue  # its own artifacts: emptyDirs of its own pod
        if mount.host_bind is None:
            raise BackendError(f"input at {mount.target} has no copy on this host to deliver")
        found.append(Delivery(Path(mount.host_bind.source), mount.target))
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


async def archive(source: Path) -> AsyncIterator[bytes]:
    """The directory's content as a tar stream (entries relative to it), made in a
    thread and handed over in CHUNK pieces, at most PENDING_CHUNKS ahead; BackendError
    for anything but regular files and directories."""
    pieces: queue.Queue[bytes | BaseException | None] = queue.Queue(PENDING_CHUNKS)
    stop = threading.Event()
    maker = threading.Thread(
        target=_make, args=(source, pieces, stop), name=f"archive {source}", daemon=True
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


def _make(source: Path, pieces: queue.Queue[Any], stop: threading.Event) -> None:
    out = _Pieces(pieces, stop)
    try:
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            _add_tree(tar, source, "")
        out.flush_all()
        out._put(None)
    except _Abandoned:
        return
    except (OSError, BackendError) as error:
        if not stop.is_set():
            pieces.put(error if isinstance(error, BackendError) else BackendError(str(error)))


def _add_tree(tar: tarfile.TarFile, directory: Path, prefix: str) -> None:
    with os.scandir(directory) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            name = f"{prefix}{entry.name}"
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                tar.addfile(_header(name, tarfile.DIRTYPE, 0, info.st_mode))
                _add_tree(tar, Path(entry.path), f"{name}/")
            elif stat.S_ISREG(info.st_mode):
                fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW)
                with os.fdopen(fd, "rb") as file:
                    size = os.fstat(file.fileno()).st_size
                    tar.addfile(_header(name, tarfile.REGTYPE, size, info.st_mode), file)
            else:
                raise BackendError(f"{name}: not a regular file or directory, not delivered")


def _header(name: str, kind: bytes, size: int, mode: int) -> tarfile.TarInfo:
    """Only what the consumer needs: no owner, no times of the host, no set-id bits."""
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode = kind, size, stat.S_IMODE(mode) & 0o755
    return info
