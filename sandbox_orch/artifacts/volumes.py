"""The run's artifact volumes: created per producer attempt, measured, copied, released.

Each artifact a node declares is its own volume, memory-backed and capped at the policy's
`artifacts` size (and at one inode per 4 KiB of it), mounted noexec, nosuid and nodev, so
a producer cannot fill the host's memory or disk; a write past the cap fails inside the
node. Consumers mount a volume read-only, and only once its producer has finished:
planning allows inputs only from ancestors.

Where the backend keeps volumes decides the rest (`Backend.volume_store`):
- "host": a tmpfs mounted on this host (backend/hostvolumes.py) keeps its content with
  no container. Its use is asked with `statvfs` and a walk, and `copy_tree` reads its
  files directly.
- "engine": the engine discards a memory-backed volume when nothing mounts it, so an
  idle *holder* container (ours: it runs `sleep`, never the node's code) mounts the
  producer's volumes read-only from before the producer starts until they are released.
  Its use is asked with `stat -f` and `du` in the holder, and the files come through the
  engine's archive API into `extract`.
- "pod": the volumes live in the producer's own pod (a cluster's emptyDirs), which keeps
  them, with a holder container of its own, after the node's container ends. The
  producer's container id is their holder (`held_by`): the node runner leaves it to
  these volumes, which measure and copy them as for "engine" and then remove it. A
  consumer's view is the producer's copy on this host, which the backend delivers into
  the consumer's own pod: so a consumer waits for that copy, and the producer's pod goes
  once copied, whoever still consumes it (inputs then count against each consumer's
  memory, not artifacts_total).

After the producer stops, its use settles the node's status (blocks, inodes, and the
apparent size: a sparse file's holes would be written out in full by a copy); then, in the
background while later nodes run, its volumes are copied under
`.sandbox-orch/runs/<run>/artifacts/<node>/<name>/` within the same budget (copy.py).
A volume is released (lifetimes.py) as soon as it is copied and no consumer that could
mount it is pending; a retry's previous attempt's volumes go before the retry's are made.
`close()` of the node runner removes whatever is left, by label.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backend import (
    BYTES_PER_INODE,
    HOLDER_CPUS,
    HOLDER_IMAGE,
    HOLDER_MEMORY,
    HOLDER_PIDS,
    HOLDER_ROOT,
    Backend,
    BackendError,
    ContainerSpec,
    Resource,
    Volume,
    VolumeMount,
    inode_limit,
)
from ..mounts import BindMount
from ..planning import PlannedNode
from ..sandbox import Sandbox
from ..units import format_size
from .copy import Budget, Extracted, apparent_size, copy_tree, extract
from .lifetimes import ArtifactsRefused, Lifetimes

log = logging.getLogger(__name__)

# One exec in the holder: blocks, blocks free, inodes, inodes free; then the apparent size.
_USAGE_SCRIPT = 'stat -f -c "%b %a %c %d" "$1" && du -s -b "$1"'
_EXEC_NOT_STARTED = 126  # what an exec reports when the runtime could not start it


@dataclass(frozen=True)
class HeldVolume:
    node: str
    name: str
    path: str  # where the producer writes it
    volume: Volume
    holder: str | None  # the holder container's id (an "engine" volume's only)
    size: int  # its cap, reserved against the ceiling while it exists
    view: Volume | None = None  # read-only, noexec: what consumers mount (if any may)
    in_pod: bool = False  # the "pod" store's: its view is the host copy, once made


@dataclass(frozen=True)
class Usage:
    blocks: int
    blocks_free: int
    inodes: int
    inodes_free: int
    apparent: int  # bytes, holes included


@dataclass
class _Group:
    """One producer attempt's volumes (and their holder), released together or one by one."""

    node: str
    volumes: list[HeldVolume]
    holder: str | None
    dispose: Callable[[str], Awaitable[None]]
    in_pod: bool = False  # the "pod" store: the producer's container becomes the holder
    copy: asyncio.Future[None] | None = None
    released: set[str] = field(default_factory=set)  # artifact names already removed
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    stuck: bool = False  # a removal failed: left for the run's sweep

    @property
    def live(self) -> list[HeldVolume]:
        return [v for v in self.volumes if v.name not in self.released]


class ArtifactVolumes:
    def __init__(
        self,
        backend: Backend,
        labels: dict[str, str],
        host_root: Path,
        nodes: Mapping[str, PlannedNode],
        ceiling: int,
    ) -> None:
        """`nodes`: the plan's (who consumes what); `ceiling`: the policy's artifacts_total."""
        self.backend = backend
        self.labels = labels
        self.host_root = host_root
        self.lifetimes = Lifetimes(nodes, ceiling)
        self.current: dict[tuple[str, str], HeldVolume] = {}  # (node, name) -> last attempt's
        self._latest: dict[str, _Group] = {}  # node -> its last attempt's volumes
        self._groups: list[_Group] = []  # every group not wholly released
        self._copies: dict[str, asyncio.Future[None]] = {}  # node -> its latest copy
        self._releases: set[asyncio.Future[None]] = set()
        # Creations still under way: an engine call cannot be called back, so a cancelled
        # attempt's volume may appear later; `finish` waits for it before the sweep.
        self._creating: set[asyncio.Future[Volume]] = set()
        self._complete: set[tuple[str, str]] = set()  # (node, name) copied whole to the host

    async def for_producer(
        self,
        node: PlannedNode,
        sandbox: Sandbox,
        attempt: int,
        register: Callable[[ContainerSpec], Awaitable[str]],
        dispose: Callable[[str], Awaitable[None]],
    ) -> tuple[VolumeMount, ...]:
        """Fresh volumes for this attempt, held from now on; the producer's mounts. The
        previous attempt's go first (copied, then released); ArtifactsRefused if these
        would pass the policy's artifacts_total."""
        if not node.artifacts:
            return ()
        previous = self._latest.pop(node.name, None)
        if previous is not None:
            if previous.copy is not None:
                await asyncio.gather(previous.copy, return_exceptions=True)
            await self._release(previous, whole=True)
        size = sandbox.artifact_limit
        await self._reserve([size] * len(node.artifacts))
        labels = {**self.labels, "sandbox-orch.node": node.name}
        prefix = f"sandbox-orch-{labels['sandbox-orch.run']}-{node.name}-{attempt}"
        volumes: dict[Any, Volume] = {}
        try:
            for artifact in node.artifacts:
                name = f"{prefix}-{artifact.name}"
                volumes[artifact] = await self._create(name, labels, sandbox)
        finally:
            # What was never created holds nothing (what was is swept with the run).
            self.lifetimes.free(size * (len(node.artifacts) - len(volumes)))
        store = await self.backend.volume_store()
        in_pod = store == "pod"
        holder = None
        if store == "engine":
            holder = await register(self._holder_spec(prefix, labels, sandbox, volumes))
        held = []
        for a, v in volumes.items():
            view = await self._view(node, a, v, in_pod)
            held.append(HeldVolume(node.name, a.name, a.path, v, holder, size, view, in_pod))
        group = _Group(node.name, held, holder, dispose, in_pod=in_pod)
        self._latest[node.name] = group
        self._groups.append(group)
        for volume in held:
            self.current[(node.name, volume.name)] = volume
        return tuple(
            VolumeMount(v.name, a.path, False, _host_bind(v, a.path, False))
            for a, v in volumes.items()
        )

    def held_by(self, node: str, container_id: str) -> None:
        """The node's container just created is its volumes' holder if they are in its
        pod (the "pod" store): then it is theirs to remove, once copied (`holds`)."""
        group = self._latest.get(node)
        if group is None or not group.in_pod:
            return
        group.holder = container_id
        group.volumes = [dataclasses.replace(v, holder=container_id) for v in group.volumes]
        for volume in group.volumes:
            self.current[(volume.node, volume.name)] = volume

    def holds(self, container_id: str) -> bool:
        """Whether the container is a pod-store holder that these volumes will remove."""
        return any(g.in_pod and g.holder == container_id for g in self._groups)

    async def _reserve(self, sizes: list[int]) -> None:
        """Reserve, after the releases already due if it does not fit at once: a volume
        whose last consumer just finished may still be on its way out."""
        try:
            self.lifetimes.reserve(sizes)
        except ArtifactsRefused:
            await self._drain()
            self.lifetimes.reserve(sizes)

    async def _drain(self) -> None:
        """Wait for every release that is due, and the copies they wait for."""
        while True:
            # Due now, even if a finished copy's callback has not run yet.
            self._release_unneeded()
            copies = [
                g.copy
                for g in self._groups
                if g.copy is not None and not g.copy.done() and self._due(g, copied=False)
            ]
            pending = [*copies, *self._releases]
            if not pending:
                return
            await asyncio.gather(*pending, return_exceptions=True)

    async def _create(self, name: str, labels: dict[str, str], sandbox: Sandbox) -> Volume:
        task = asyncio.ensure_future(
            self.backend.create_volume(name, labels, sandbox.artifact_limit, sandbox.user)
        )
        self._creating.add(task)
        task.add_done_callback(self._creating.discard)
        return await asyncio.shield(task)

    async def _view(
        self, node: PlannedNode, artifact: Any, volume: Volume, in_pod: bool
    ) -> Volume | None:
        """The read-only view consumers mount, if the plan has any for this artifact (in
        the "pod" store, the host copy, which stays for the run)."""
        if not self.lifetimes.consumers.get((node.name, artifact.name)):
            return None
        if in_pod:
            return Volume(f"{volume.name}-ro", self._copy_of(node.name, artifact.name))
        labels = {**self.labels, "sandbox-orch.node": node.name}
        return await self.backend.read_only_view(f"{volume.name}-ro", volume, labels)

    async def for_consumer(self, node: PlannedNode) -> tuple[VolumeMount, ...]:
        """Each input's read-only view. Read-only at its source, so mounted as it is: a
        read-only mount would be remounted by runc, dropping noexec, nosuid and nodev.
        (Podman remounts every mount with its own options: there, a host view is a bind
        asked read-only, to which Podman adds the flags its source has; settings.py.)
        In the "pod" store, once the producer's copy is done; BackendError if the copy
        of an input failed (the node is not run without it)."""
        mounts = []
        for needed in node.inputs:
            held = self.current.get((needed.producer, needed.name))
            if held is None:
                continue  # a producer that never ran has none
            assert held.view is not None  # planning gives every consumed artifact a view
            view = held.view
            if held.in_pod:
                await self._copied(needed.producer, needed.name)
            mounts.append(VolumeMount(view.name, needed.path, False, _host_bind(view, needed.path)))
        return tuple(mounts)

    async def _copied(self, producer: str, name: str) -> None:
        copy = self._copies.get(producer)
        if copy is not None:
            await asyncio.shield(copy)  # a consumer's cancellation leaves the copy be
        if (producer, name) not in self._complete:
            raise BackendError(f"input {producer}/{name}: its copy to this host failed")

    def _copy_of(self, node: str, name: str) -> Path:
        return self.host_root / node / name

    # --- what the producer left ------------------------------------------------------------

    async def over_limits(self, node: PlannedNode, limit: int) -> list[str]:
        """Why the node's artifacts are over the policy's limits, if they are: cap reached,
        inodes all used, or an apparent size (holes included) above the cap. Asked of the
        volume (`statvfs` and a walk here, one exec in the holder): cheap, so the node's
        status is known at once, while the copy to the host runs in the background."""
        reasons = []
        cap = format_size(limit)
        for artifact in node.artifacts:
            usage = await self._usage(self.current[(node.name, artifact.name)])
            name = artifact.name
            if isinstance(usage, str):  # fail closed: what cannot be measured is not trusted
                reasons.append(f"artifact {name!r}: its use could not be measured ({usage})")
                continue
            if usage.blocks_free * 100 <= usage.blocks:  # tmpfs keeps a little for itself
                reasons.append(f"artifact {name!r} reached the policy's artifacts limit ({cap})")
            if usage.inodes_free == 0:
                count = inode_limit(limit) - 1
                reasons.append(
                    f"artifact {name!r} reached the limit of {count} files and directories "
                    f"(one per {BYTES_PER_INODE // 1024}k of the policy's artifacts limit, {cap})"
                )
            if usage.apparent > limit:
                reasons.append(
                    f"artifact {name!r} holds {usage.apparent} bytes (apparent size, holes "
                    f"included), above the policy's artifacts limit ({cap})"
                )
        return reasons

    async def _usage(self, held: HeldVolume) -> Usage | str:
        """What the volume's file system says it holds, or why it cannot be told."""
        if held.volume.host_path is not None:
            info = os.statvfs(held.volume.host_path)
            apparent = await asyncio.to_thread(apparent_size, held.volume.host_path)
            return Usage(info.f_blocks, info.f_bavail, info.f_files, info.f_ffree, apparent)
        assert held.holder is not None
        path = f"{HOLDER_ROOT}/{held.name}"
        argv = ["sh", "-c", _USAGE_SCRIPT, "sh", path]
        try:
            code, out = await self.backend.run_in(held.holder, argv)
            # The engine's failures, not the volume's: ask again once. An exec that did
            # not start, or one whose output the engine lost (Docker 20.10, under load:
            # exit 0 and nothing printed, which the script cannot do).
            if code == _EXEC_NOT_STARTED or (code == 0 and not out):
                code, out = await self.backend.run_in(held.holder, argv)
        except BackendError as error:  # e.g. a killed producer's pod, gone with its volumes
            return f"the holder could not be asked: {error}"
        fields = out.split()
        if code != 0 or len(fields) < 5 or not all(f.isdigit() for f in fields[:5]):
            return f"the holder's `stat -f` and `du` exited {code}, printing {out[:200]!r}"
        return Usage(*(int(f) for f in fields[:5]))

    # --- the copy to the host ----------------------------------------------------------

    def copy_in_background(self, node: PlannedNode, attempt: Any) -> None:
        """Copy the node's artifacts to the host while later nodes start (they mount the
        volumes themselves). Copies of one node run in order, so a retry's copy always
        replaces the previous attempt's. `finish()` waits for all of them."""
        held = [self.current[(node.name, a.name)] for a in node.artifacts]
        previous = self._copies.get(node.name)
        copy = asyncio.ensure_future(self._copy(held, attempt, previous))
        self._copies[node.name] = copy
        group = self._latest.get(node.name)
        if group is not None:
            group.copy = copy
            copy.add_done_callback(lambda _: self._release_unneeded())

    async def _copy(
        self, held: list[HeldVolume], attempt: Any, previous: asyncio.Future[None] | None
    ) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        records, violations = [], []
        for volume in held:
            target = self._copy_of(volume.node, volume.name)
            # A retry's copy replaces the last attempt's (ours: no links inside to follow).
            self._complete.discard((volume.node, volume.name))
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
                 "files": found.files, "sha256": found.sha256, "complete": found.complete}
            )  # fmt: skip
            violations += [
                {"kind": "artifact", "detail": f"{volume.name}/{why}"} for why in found.problems()
            ]
            if found.complete:
                self._complete.add((volume.node, volume.name))
        attempt.artifacts = records
        attempt.violations = [*attempt.violations, *violations]

    async def _read(self, held: HeldVolume, target: Path) -> Extracted:
        budget = Budget.for_cap(held.size)
        if held.volume.host_path is not None:
            return await asyncio.to_thread(copy_tree, held.volume.host_path, target, budget)
        assert held.holder is not None
        source = f"{HOLDER_ROOT}/{held.name}"
        return await self.backend.export(held.holder, source, lambda s: extract(s, target, budget))

    # --- release ---------------------------------------------------------------------------

    def node_finished(self, node: str, retrying: bool) -> None:
        """A node's attempt ended (the scheduler's NodeFinished); with no retry to follow,
        it will never mount anything again: release what no one needs any more."""
        if not retrying:
            self.lifetimes.finished(node)
            self._release_unneeded()

    def _release_unneeded(self) -> None:
        for group in list(self._groups):
            if self._due(group, copied=True):  # a duplicate waits, then finds nothing
                task = asyncio.ensure_future(self._release(group, whole=False))
                self._releases.add(task)
                task.add_done_callback(self._releases.discard)

    def _due(self, group: _Group, copied: bool) -> bool:
        """Whether `_release` would remove something of the group now (`copied`: and its
        copy is done; a release waits for it, the copy's callback asks again)."""
        if group.stuck or (copied and group.copy is not None and not group.copy.done()):
            return False
        if group.in_pod:  # consumers read the host copy: all go once the copy has begun
            return group.copy is not None
        unneeded = [v for v in group.live if not self._needed(group, v)]
        if group.holder is not None:  # a holder's volumes go together
            return bool(unneeded) and len(unneeded) == len(group.live)
        return bool(unneeded)

    async def _release(self, group: _Group, whole: bool) -> None:
        """Remove the group's volumes that nothing needs (all of them if `whole`). A
        holder's volumes go together, after the holder: a mounted volume cannot go."""
        async with group.lock:
            done = [v for v in group.live if whole or not self._needed(group, v)]
            if not done or (group.holder is not None and len(done) < len(group.live)):
                return
            try:
                if group.holder is not None:
                    await group.dispose(group.holder)
                for volume in done:
                    labels = {**self.labels, "sandbox-orch.node": volume.node}
                    for each in (volume.view, volume.volume):  # the view first: it binds the other
                        if each is not None:
                            await self.backend.remove_resource(
                                Resource("volume", each.name, labels)
                            )
                    group.released.add(volume.name)
                    self.lifetimes.free(volume.size)
                    # (a "pod" volume's view, the host copy, is still its consumers')
                    if not group.in_pod and self.current.get((volume.node, volume.name)) is volume:
                        del self.current[(volume.node, volume.name)]
            except BackendError as error:  # kept, and reserved, until the run's sweep
                log.warning("releasing artifact volumes of %s: %s", group.node, error)
                group.stuck = True
                return
            if not group.live:
                self._groups.remove(group)

    def _needed(self, group: _Group, volume: HeldVolume) -> bool:
        """Whether a consumer may still mount the volume itself (never a "pod" one)."""
        return not group.in_pod and self.lifetimes.needed(volume.node, volume.name)

    async def finish(self) -> None:
        """Wait for every creation, copy and release under way (before the run's sweep)."""
        while pending := [*self._creating, *self._copies.values(), *self._releases]:
            await asyncio.gather(*pending, return_exceptions=True)
            if all(task.done() for task in [*self._creating, *self._releases]):
                break

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
            cpus=HOLDER_CPUS,
            memory=HOLDER_MEMORY,
            pids=HOLDER_PIDS,
            tmpfs={},
            volumes=tuple(
                VolumeMount(v.name, f"{HOLDER_ROOT}/{a.name}", read_only=True)
                for a, v in volumes.items()
            ),
        )


def _host_bind(volume: Volume, target: str, read_only: bool = True) -> BindMount | None:
    """A host-store volume as a bind of its mount (what Podman is given, settings.py)."""
    if volume.host_path is None:
        return None
    return BindMount(str(volume.host_path), target, read_only)
