"""An in-memory backend for scheduler tests and benchmarks (like httpx's MockTransport).

Each container "runs" a script: a function from the spec to an outcome. Nothing touches
an engine; it records what was created, started, killed and removed so tests can check
the scheduler's promises (order, parallelism, cleanup) without containers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import itertools
import shutil
import socket
import tarfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar

from ..enginesetup import RUNSC_ARGS
from .base import (
    ALL_KINDS,
    Backend,
    ContainerSpec,
    ExitStatus,
    ImageMissing,
    OutputSink,
    Resource,
    ResourceKind,
    Volume,
    VolumeStore,
)


@dataclass(frozen=True)
class Outcome:
    exit_code: int = 0
    stdout: bytes = b""
    stderr: bytes = b""
    oom_killed: bool = False
    hang: bool = False  # never exits until killed (for timeouts and interrupts)
    # A `tty` container's side of its terminal: run in a thread with the socket's other
    # end (read keys, send screen bytes); the container exits when it returns.
    terminal: Callable[[socket.socket], None] | None = None


T = TypeVar("T")
# As `sandbox-orch setup` registers them on a real engine.
HARDENED_RUNTIMES = {"runc": [], "runsc": list(RUNSC_ARGS)}
Script = Callable[[ContainerSpec], Outcome | Awaitable[Outcome]]


@dataclass
class _Container:
    spec: ContainerSpec
    started: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)
    status: ExitStatus | None = None
    task: asyncio.Task[None] | None = None
    # A `gated` one runs its command only once released (as sandbox-orch-gate does).
    go: asyncio.Event = field(default_factory=asyncio.Event)


class MemoryBackend(Backend):
    holds_containers = True

    def __init__(
        self,
        script: Script | None = None,
        images: set[str] | None = None,
        runtimes: dict[str, list[str]] | None = None,
        volume_root: Path | None = None,
        pod_volumes: bool = False,
    ) -> None:
        """`volume_root`: keep volumes as plain directories there (the "host" store, no
        cap), which a script may write into; None: the "engine" store, holding nothing;
        `pod_volumes`: the "pod" store (a cluster's), holding nothing either."""
        self.script: Script = script or (lambda spec: Outcome())
        self.volume_root = volume_root
        self.pod_volumes = pod_volumes
        self.calls: list[tuple[str, str]] = []  # (run_in/export/remove, container), in order
        self.images = images
        self.runtimes = runtimes if runtimes is not None else dict(HARDENED_RUNTIMES)
        self.containers: dict[str, _Container] = {}
        self.removed: list[str] = []
        self.volumes: dict[str, dict[str, str]] = {}
        self.log: list[tuple[str, str]] = []  # (event, node name), in order
        self.running = 0
        self.peak_running = 0
        self.resizes: list[tuple[str, int, int]] = []  # (container, rows, columns)
        self._ids = itertools.count(1)

    async def create(self, spec: ContainerSpec) -> str:
        container_id = f"mem-{next(self._ids)}"
        self.containers[container_id] = _Container(spec)
        return container_id

    async def start(self, container_id: str, sink: OutputSink | None) -> None:
        self._start(container_id, sink, None)

    def _start(
        self, container_id: str, sink: OutputSink | None, terminal: socket.socket | None
    ) -> None:
        container = self.containers[container_id]
        container.started = True
        self.log.append(("start", _node(container)))
        if not container.spec.gated:
            self._running(container)
        container.task = asyncio.create_task(self._run(container, sink, terminal))

    def _running(self, container: _Container) -> None:
        self.running += 1
        self.peak_running = max(self.peak_running, self.running)
        container.go.set()

    async def release(self, container_id: str) -> None:
        container = self.containers[container_id]
        assert container.spec.gated and container.started and not container.go.is_set()
        self.log.append(("release", _node(container)))
        self._running(container)

    async def start_terminal(self, container_id: str) -> socket.socket:
        ours, theirs = socket.socketpair()
        self._start(container_id, None, theirs)
        return ours

    async def resize(self, container_id: str, rows: int, columns: int) -> None:
        self.resizes.append((container_id, rows, columns))

    async def _run(
        self, container: _Container, sink: OutputSink | None, terminal: socket.socket | None
    ) -> None:
        spec = container.spec
        if spec.gated:  # held: what runs once released is the gate's command
            await container.go.wait()
            spec = dataclasses.replace(spec, argv=spec.argv[1:])
        outcome = self.script(spec)
        if not isinstance(outcome, Outcome):
            outcome = await outcome
        if terminal is not None:
            with terminal:  # closed when it "exits": the other end reads EOF
                if outcome.terminal is not None:
                    await asyncio.to_thread(outcome.terminal, terminal)
        if sink is not None and outcome.stdout:
            sink.write("stdout", outcome.stdout)
        if sink is not None and outcome.stderr:
            sink.write("stderr", outcome.stderr)
        if outcome.hang:
            await asyncio.Event().wait()  # until killed (cancelled)
        self._exit(container, ExitStatus(outcome.exit_code, outcome.oom_killed))

    def _exit(self, container: _Container, status: ExitStatus) -> None:
        if container.status is None:
            container.status = status
            if container.go.is_set():
                self.running -= 1
            self.log.append(("exit", _node(container)))
            container.done.set()

    async def wait(self, container_id: str) -> ExitStatus:
        container = self.containers[container_id]
        await container.done.wait()
        assert container.status is not None
        return container.status

    async def kill(self, container_id: str) -> None:
        container = self.containers.get(container_id)
        if container is None or container.status is not None:
            return
        if container.task is not None:
            container.task.cancel()
        if container.started:
            self._exit(container, ExitStatus(137))
        else:
            container.status = ExitStatus(137)
            container.done.set()

    async def remove(self, container_id: str) -> None:
        self.calls.append(("remove", container_id))
        if container_id in self.containers:
            await self.kill(container_id)
            del self.containers[container_id]
            self.removed.append(container_id)

    async def image_id(self, image: str) -> str:
        if self.images is not None and image not in self.images:
            raise ImageMissing(f"image {image} is not built")
        return f"sha256:{abs(hash(image)):064x}"[:71]

    async def oci_runtimes(self) -> dict[str, list[str]]:
        return dict(self.runtimes)

    async def labelled(
        self, label: str, value: str | None = None, kinds: tuple[ResourceKind, ...] = ALL_KINDS
    ) -> list[Resource]:
        def wanted(labels: dict[str, str]) -> bool:
            return label in labels and (value is None or labels[label] == value)

        found = [
            Resource("container", cid, c.spec.labels)
            for cid, c in self.containers.items()
            if "container" in kinds and wanted(c.spec.labels)
        ]
        found += [
            Resource("volume", name, labels)
            for name, labels in self.volumes.items()
            if "volume" in kinds and wanted(labels)
        ]
        return found

    async def remove_resource(self, resource: Resource) -> None:
        if resource.kind == "volume":
            self.volumes.pop(resource.id, None)
            if self.volume_root is not None:
                path = self.volume_root / resource.id
                if path.is_symlink():
                    path.unlink()  # a view
                shutil.rmtree(path, ignore_errors=True)
        else:
            await self.remove(resource.id)

    async def volume_store(self) -> VolumeStore:
        if self.pod_volumes:
            return "pod"
        return "engine" if self.volume_root is None else "host"

    async def create_volume(
        self, name: str, labels: dict[str, str], size: int, owner: str
    ) -> Volume:
        self.volumes[name] = labels
        if self.volume_root is None:
            return Volume(name)
        path = self.volume_root / name
        path.mkdir(parents=True)
        return Volume(name, path)

    async def read_only_view(self, name: str, volume: Volume, labels: dict[str, str]) -> Volume:
        """Another name for the same directory (nothing here enforces read-only)."""
        self.volumes[name] = labels
        if self.volume_root is None:
            return Volume(name)
        path = self.volume_root / name
        path.symlink_to(volume.name)
        return Volume(name, path)

    async def run_in(self, container_id: str, argv: list[str]) -> tuple[int, bytes]:
        """Answers the holder's usage question (`stat -f`, `du`) as an empty volume would:
        in memory, nodes write nothing there."""
        self.calls.append(("run_in", container_id))
        return 0, b"1000 1000 1024 1023\n0\t/held\n"

    async def export(self, container_id: str, path: str, consume: Callable[[BinaryIO], T]) -> T:
        """An empty archive: in memory, nodes write no files."""
        self.calls.append(("export", container_id))
        empty = io.BytesIO()
        tarfile.open(fileobj=empty, mode="w").close()
        empty.seek(0)
        return consume(empty)


def _node(container: _Container) -> str:
    return container.spec.labels.get("sandbox-orch.node", "")
