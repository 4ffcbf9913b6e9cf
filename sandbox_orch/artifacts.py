"""Artifacts between nodes, and their copy to the host.

Each artifact a node declares is its own volume, memory-backed and capped at the policy's
`artifacts` size, so a producer cannot fill the host disk; a write past the cap fails
inside the node. Consumers mount a volume read-only, and only once its producer has
finished: planning allows inputs only from ancestors.

Where the backend keeps volumes decides the rest (`Backend.volume_store`):
- "host": a tmpfs mounted on this host (backend/hostvolumes.py) keeps its content with
  no container. Whether it hit its cap is asked with `statvfs`, and `copy_tree` reads its
  files directly.
- "engine": the engine discards a memory-backed volume when nothing mounts it, so an
  idle *holder* container (ours: it runs `sleep`, never the node's code) mounts the
  producer's volumes read-only from before the producer starts until the run ends. The
  cap is asked with `stat -f` in the holder, and the files come through the engine's
  archive API into `extract`.

After the producer stops, the cap check settles the node's status; then, in the
background while later nodes run, its volumes are copied under
`.sandbox-orch/runs/<run>/artifacts/<node>/<name>/`. Either copy writes regular files
and directories only: symlinks, hard links, devices, FIFOs and sockets are refused and
recorded as violations, never followed and never opened for reading (a FIFO cannot block
the copy).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from .backend import Backend, BackendError, ContainerSpec, Volume, VolumeMount
from .planning import PlannedNode
from .sandbox import Sandbox
from .units import format_size

HOLDER_IMAGE = "sandbox-orch/base"
HOLDER_ROOT = "/held"
CHUNK = 1 << 20
# Directories deeper than this are refused by `copy_tree`: it holds one descriptor per level.
MAX_DEPTH = 128
ONLY_PLAIN = "refused (only files and directories)"


@dataclass
class Extracted:
    """What one artifact's copy produced."""

    files: int = 0
    bytes: int = 0
    digests: list[tuple[str, str]] = field(default_factory=list)  # (relative path, sha256)
    refused: list[str] = field(default_factory=list)

    @property
    def sha256(self) -> str:
        """One digest for the whole artifact: over its sorted (path, file digest) pairs."""
        listing = "".join(f"{path}\0{digest}\n" for path, digest in sorted(self.digests))
        return hashlib.sha256(listing.encode()).hexdigest()


def extract(stream: BinaryIO, destination: Path) -> Extracted:
    """Write the regular files and directories of a tar stream under `destination`.

    Everything else is refused with a reason. Paths are checked again here (absolute or
    `..` names are refused), and files are created with O_EXCL|O_NOFOLLOW, so nothing in
    the archive can make this write outside `destination`.
    """
    result = Extracted()
    destination.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            relative = _inside(member.name)
            if relative is None:
                result.refused.append(f"{member.name!r}: a path outside the artifact")
            elif member.isdir():
                if relative != PurePosixPath("."):
                    _mkdir(destination, relative, result)
            elif member.isreg():
                source = archive.extractfile(member)
                assert source is not None  # a regular file always has data
                _write(source, destination, relative, result)
            else:
                result.refused.append(f"{relative}: {_kind(member)}, {ONLY_PLAIN}")
    return result


def copy_tree(source: Path, destination: Path) -> Extracted:
    """Copy the regular files and directories below `source` (a volume mounted here) to
    `destination`, refusing everything else with a reason, as `extract` does.

    Nothing is followed: each directory is opened relative to its parent with O_NOFOLLOW,
    each file with O_NOFOLLOW|O_NONBLOCK (never blocking on a FIFO) and checked to be the
    regular file that was listed. Of several names for one inode, the first (in sorted
    order) is copied and the others refused as hard links, as in an archive.
    """
    destination.mkdir(parents=True, exist_ok=True)
    copy = _TreeCopy(destination)
    root = os.open(source, _DIRECTORY_FLAGS)
    try:
        copy.directory(root, PurePosixPath("."), 1)
    finally:
        os.close(root)
    return copy.result


_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class _TreeCopy:
    """One `copy_tree`: where it writes, what it found, and the inodes already copied."""

    def __init__(self, destination: Path) -> None:
        self.destination = destination
        self.result = Extracted()
        self.seen: dict[tuple[int, int], str] = {}  # (device, inode) -> first name

    def directory(self, descriptor: int, relative: PurePosixPath, depth: int) -> None:
        with os.scandir(descriptor) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
        for entry in entries:
            path, info = relative / entry.name, entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                self.subdirectory(descriptor, entry.name, path, depth + 1)
            elif stat.S_ISLNK(info.st_mode):
                target = os.readlink(entry.name, dir_fd=descriptor)
                self.refuse(path, f"a symlink to {target!r}, {ONLY_PLAIN}")
            elif not stat.S_ISREG(info.st_mode):
                self.refuse(path, f"{_mode_kind(info.st_mode)}, {ONLY_PLAIN}")
            elif (info.st_dev, info.st_ino) in self.seen:
                first = self.seen[(info.st_dev, info.st_ino)]
                self.refuse(path, f"a hard link to {first!r}, {ONLY_PLAIN}")
            else:
                if info.st_nlink > 1:
                    self.seen[(info.st_dev, info.st_ino)] = str(path)
                self.file(descriptor, entry.name, info, path)

    def subdirectory(self, parent: int, name: str, path: PurePosixPath, depth: int) -> None:
        if depth > MAX_DEPTH:
            self.refuse(path, f"deeper than {MAX_DEPTH} directories, refused", "/")
            return
        _mkdir(self.destination, path, self.result)
        try:
            descriptor = os.open(name, _DIRECTORY_FLAGS, dir_fd=parent)
        except OSError as error:
            self.refuse(path, str(error.strerror), "/")
            return
        try:
            self.directory(descriptor, path, depth)
        finally:
            os.close(descriptor)

    def file(self, parent: int, name: str, listed: os.stat_result, path: PurePosixPath) -> None:
        try:
            descriptor = os.open(name, _FILE_FLAGS, dir_fd=parent)
        except OSError as error:
            self.refuse(path, str(error.strerror))
            return
        with os.fdopen(descriptor, "rb", buffering=0) as source:
            opened = os.fstat(descriptor)
            if (opened.st_dev, opened.st_ino) != (listed.st_dev, listed.st_ino):
                self.refuse(path, "replaced while being copied, refused")
                return
            _write(source, self.destination, path, self.result)

    def refuse(self, path: PurePosixPath, why: str, suffix: str = "") -> None:
        self.result.refused.append(f"{path}{suffix}: {why}")


def _inside(name: str) -> PurePosixPath | None:
    """The member's path below the artifact root (the archive's first component)."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        return None
    parts = path.parts[1:]  # the engine names entries after the archived directory
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _mkdir(destination: Path, relative: PurePosixPath, result: Extracted) -> None:
    try:
        (destination / relative).mkdir(mode=0o755, parents=False, exist_ok=True)
    except OSError as error:
        result.refused.append(f"{relative}/: {error.strerror}")


def _write(source: BinaryIO, destination: Path, relative: PurePosixPath, result: Extracted) -> None:
    """Write one file's content under `destination`, never over anything already there."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        descriptor = os.open(destination / relative, flags, 0o644)
    except OSError as error:
        result.refused.append(f"{relative}: {error.strerror}")
        return
    digest, size = hashlib.sha256(), 0
    with os.fdopen(descriptor, "wb") as target:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            target.write(chunk)
            size += len(chunk)
    result.files += 1
    result.bytes += size
    result.digests.append((str(relative), digest.hexdigest()))


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


@dataclass(frozen=True)
class HeldVolume:
    node: str
    name: str
    path: str  # where the producer writes it
    volume: Volume
    holder: str | None  # the holder container's id (an "engine" volume's only)


class ArtifactVolumes:
    """The run's artifact volumes: created per producer attempt, held, read, removed
    with the run (they carry the run's labels like everything else it creates)."""

    def __init__(self, backend: Backend, labels: dict[str, str], host_root: Path) -> None:
        self.backend = backend
        self.labels = labels
        self.host_root = host_root
        self.current: dict[tuple[str, str], HeldVolume] = {}  # (node, name) -> last attempt's
        self._copies: dict[str, asyncio.Future[None]] = {}  # node -> its latest copy
        # Creations still under way: an engine call cannot be called back, so a cancelled
        # attempt's volume may appear later; `finish` waits for it before the sweep.
        self._creating: set[asyncio.Future[Volume]] = set()

    async def for_producer(
        self, node: PlannedNode, sandbox: Sandbox, attempt: int, register: Any
    ) -> tuple[VolumeMount, ...]:
        """Fresh volumes for this attempt, held from now on; the producer's mounts."""
        if not node.artifacts:
            return ()
        labels = {**self.labels, "sandbox-orch.node": node.name}
        prefix = f"sandbox-orch-{labels['sandbox-orch.run']}-{node.name}-{attempt}"
        volumes = {}
        for artifact in node.artifacts:
            name = f"{prefix}-{artifact.name}"
            volumes[artifact] = await self._create(name, labels, sandbox)
        holder = None
        if any(v.host_path is None for v in volumes.values()):
            holder = await register(self._holder_spec(prefix, labels, sandbox, volumes))
        for artifact, volume in volumes.items():
            held = HeldVolume(node.name, artifact.name, artifact.path, volume, holder)
            self.current[(node.name, artifact.name)] = held
        return tuple(VolumeMount(v.name, a.path, read_only=False) for a, v in volumes.items())

    async def _create(self, name: str, labels: dict[str, str], sandbox: Sandbox) -> Volume:
        task = asyncio.ensure_future(
            self.backend.create_volume(name, labels, sandbox.artifact_limit, sandbox.user)
        )
        self._creating.add(task)
        task.add_done_callback(self._creating.discard)
        return await asyncio.shield(task)

    def for_consumer(self, node: PlannedNode) -> tuple[VolumeMount, ...]:
        return tuple(
            VolumeMount(self.current[(i.producer, i.name)].volume.name, i.path, read_only=True)
            for i in node.inputs
            if (i.producer, i.name) in self.current  # a producer that never ran has none
        )

    async def full(self, node: PlannedNode, limit: int) -> list[str]:
        """Which of the node's artifacts reached the cap. Asked of the volume's file system
        (`statvfs` here, or `stat -f` in the holder): cheap, so the node's status is known
        at once, while the copy to the host can run in the background."""
        reasons = []
        for artifact in node.artifacts:
            usage = await self._usage(self.current[(node.name, artifact.name)])
            if usage is None:
                continue  # the copy still counts bytes; the node's own write failed anyway
            blocks, available = usage
            if available * 100 <= blocks:  # tmpfs keeps a little for itself
                cap = format_size(limit)
                reasons.append(
                    f"artifact {artifact.name!r} reached the policy's artifacts limit ({cap})"
                )
        return reasons

    async def _usage(self, held: HeldVolume) -> tuple[int, int] | None:
        """(blocks, blocks available) of the volume's file system, if it can be told."""
        if held.volume.host_path is not None:
            info = os.statvfs(held.volume.host_path)
            return info.f_blocks, info.f_bavail
        assert held.holder is not None
        path = f"{HOLDER_ROOT}/{held.name}"
        code, out = await self.backend.run_in(held.holder, ["stat", "-f", "-c", "%b %a", path])
        fields = out.split()
        if code != 0 or len(fields) != 2:
            return None
        return int(fields[0]), int(fields[1])

    def copy_in_background(self, node: PlannedNode, attempt: Any) -> None:
        """Copy the node's artifacts to the host while later nodes start (they mount the
        volumes themselves). Copies of one node run in order, so a retry's copy always
        replaces the previous attempt's. `finish()` waits for all of them."""
        held = [self.current[(node.name, a.name)] for a in node.artifacts]
        previous = self._copies.get(node.name)
        self._copies[node.name] = asyncio.ensure_future(self._copy(held, attempt, previous))

    async def finish(self) -> None:
        await asyncio.gather(*self._creating, *self._copies.values(), return_exceptions=True)

    async def _copy(
        self, held: list[HeldVolume], attempt: Any, previous: asyncio.Future[None] | None
    ) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        records, violations = [], []
        for volume in held:
            target = self.host_root / volume.node / volume.name
            # A retry's copy replaces the last attempt's (ours: no links inside to follow).
            shutil.rmtree(target, ignore_errors=True)
            try:
                found = await self._read(volume, target)
            except (BackendError, OSError) as error:
                violations.append(
                    {"kind": "artifact", "detail": f"{volume.name}: copy failed: {error}"}
                )
                continue
            records.append(
                {"name": volume.name, "path": str(target), "bytes": found.bytes,
                 "files": found.files, "sha256": found.sha256}
            )  # fmt: skip
            violations += [
                {"kind": "artifact", "detail": f"{volume.name}/{why}"} for why in found.refused
            ]
        attempt.artifacts = records
        attempt.violations = [*attempt.violations, *violations]

    async def _read(self, held: HeldVolume, target: Path) -> Extracted:
        if held.volume.host_path is not None:
            return await asyncio.to_thread(copy_tree, held.volume.host_path, target)
        assert held.holder is not None
        source = f"{HOLDER_ROOT}/{held.name}"
        return await self.backend.export(held.holder, source, lambda s: extract(s, target))

    def _holder_spec(
        self, prefix: str, labels: dict[str, str], sandbox: Sandbox, volumes: dict[Any, Volume]
    ) -> ContainerSpec:
        # The holder runs no untrusted code; it is hardened all the same.
        return ContainerSpec(
            name=f"{prefix}-holder",
            image=HOLDER_IMAGE,
            argv=("sleep", "infinity"),
            user=sandbox.user,
            labels={**labels, "sandbox-orch.role": "artifact-holder"},
            cpus=0.1,
            memory=16 * 1024**2,
            pids=8,
            tmpfs={},
            volumes=tuple(
                VolumeMount(v.name, f"{HOLDER_ROOT}/{a.name}", read_only=True)
                for a, v in volumes.items()
            ),
        )
