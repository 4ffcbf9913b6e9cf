"""Artifacts between nodes, and their copy to the host.

Each artifact a node declares is its own volume, memory-backed and capped at the policy's
`artifacts` size, so a producer cannot fill the host disk; a write past the cap fails
inside the node. A memory-backed volume is discarded when nothing mounts it, so an idle
*holder* container (ours: it runs `sleep`, never the node's code) mounts the producer's
volumes read-only from before the producer starts until the run ends. Consumers mount a
volume read-only, and only once its producer has finished: planning allows inputs only
from ancestors.

After the producer stops, whether a volume hit its cap is asked of its file system, and
the node's status is settled; then, in the background while later nodes run, its
volumes are read through the engine's archive API and written under
`.sandbox-orch/runs/<run>/artifacts/<node>/<name>/` by `extract`, which writes
regular files and directories only: symlinks, hard links, devices, FIFOs and
sockets are refused and recorded as violations, never followed and never opened (a FIFO
cannot block the copy: its entry in the archive is only a header).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from .backend import Backend, BackendError, ContainerSpec, VolumeMount
from .planning import PlannedNode
from .sandbox import Sandbox
from .units import format_size

HOLDER_IMAGE = "sandbox-orch/base"
HOLDER_ROOT = "/held"
CHUNK = 1 << 20


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
                _write(archive, member, destination, relative, result)
            else:
                result.refused.append(
                    f"{relative}: {_kind(member)}, refused (only files and directories)"
                )
    return result


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


def _write(
    archive: tarfile.TarFile,
    member: tarfile.TarInfo,
    destination: Path,
    relative: PurePosixPath,
    result: Extracted,
) -> None:
    source = archive.extractfile(member)
    assert source is not None  # a regular file always has data
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        descriptor = os.open(destination / relative, flags, 0o644)
    except OSError as error:
        result.refused.append(f"{relative}: {error.strerror}")
        return
    digest = hashlib.sha256()
    with os.fdopen(descriptor, "wb") as target:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            target.write(chunk)
    result.files += 1
    result.bytes += member.size
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


@dataclass(frozen=True)
class HeldVolume:
    node: str
    name: str
    path: str  # where the producer writes it
    volume: str
    holder: str  # the holder container's id


class ArtifactVolumes:
    """The run's artifact volumes: created per producer attempt, held, read, removed
    with the run (they carry the run's labels like everything else it creates)."""

    def __init__(self, backend: Backend, labels: dict[str, str], host_root: Path) -> None:
        self.backend = backend
        self.labels = labels
        self.host_root = host_root
        self.current: dict[tuple[str, str], HeldVolume] = {}  # (node, name) -> last attempt's
        self._copies: dict[str, asyncio.Future[None]] = {}  # node -> its latest copy

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
            volumes[artifact] = await self.backend.create_volume(
                name, labels, sandbox.artifact_limit, sandbox.user
            )
        holder = await register(self._holder_spec(prefix, labels, sandbox, volumes))
        for artifact, volume in volumes.items():
            held = HeldVolume(node.name, artifact.name, artifact.path, volume, holder)
            self.current[(node.name, artifact.name)] = held
        return tuple(VolumeMount(v, a.path, read_only=False) for a, v in volumes.items())

    def for_consumer(self, node: PlannedNode) -> tuple[VolumeMount, ...]:
        return tuple(
            VolumeMount(self.current[(i.producer, i.name)].volume, i.path, read_only=True)
            for i in node.inputs
            if (i.producer, i.name) in self.current  # a producer that never ran has none
        )

    async def full(self, node: PlannedNode, limit: int) -> list[str]:
        """Which of the node's artifacts reached the cap. Asked of the volume's file system
        (`stat -f` in the holder): cheap, so the node's status is known at once, while
        the copy to the host can run in the background."""
        reasons = []
        for artifact in node.artifacts:
            held = self.current[(node.name, artifact.name)]
            path = f"{HOLDER_ROOT}/{artifact.name}"
            code, out = await self.backend.run_in(held.holder, ["stat", "-f", "-c", "%b %a", path])
            fields = out.split()
            if code != 0 or len(fields) != 2:
                continue  # the copy still counts bytes; the node's own write failed anyway
            blocks, available = int(fields[0]), int(fields[1])
            if available * 100 <= blocks:  # tmpfs keeps a little for itself
                cap = format_size(limit)
                reasons.append(
                    f"artifact {artifact.name!r} reached the policy's artifacts limit ({cap})"
                )
        return reasons

    def copy_in_background(self, node: PlannedNode, attempt: Any) -> None:
        """Copy the node's artifacts to the host while later nodes start (they mount the
        volumes themselves). Copies of one node run in order, so a retry's copy always
        replaces the previous attempt's. `finish()` waits for all of them."""
        held = [self.current[(node.name, a.name)] for a in node.artifacts]
        previous = self._copies.get(node.name)
        self._copies[node.name] = asyncio.ensure_future(self._copy(held, attempt, previous))

    async def finish(self) -> None:
        await asyncio.gather(*self._copies.values(), return_exceptions=True)

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
            source = f"{HOLDER_ROOT}/{volume.name}"
            try:
                found = await self.backend.export(
                    volume.holder, source, lambda s, t=target: extract(s, t)
                )
            except BackendError as error:
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

    def _holder_spec(
        self, prefix: str, labels: dict[str, str], sandbox: Sandbox, volumes: dict[Any, str]
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
                VolumeMount(v, f"{HOLDER_ROOT}/{a.name}", read_only=True)
                for a, v in volumes.items()
            ),
        )
