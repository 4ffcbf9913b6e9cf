"""The Docker implementation of the backend, on the docker SDK's low-level API client.

The SDK is blocking, so each call runs on this backend's own thread pool (the default
executor has too few threads for many long `wait` calls); each container's output is read
by a dedicated thread that streams it into the node's bounded sink.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import io
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypeVar

import docker
import docker.errors
import requests.exceptions

from ..seccomp import PODMAN_PROFILE, PODMAN_PROFILE_PATH
from . import hostvolumes, readback
from .base import (
    ALL_KINDS,
    Backend,
    BackendError,
    ContainerSpec,
    ExitStatus,
    ImageMissing,
    OutputSink,
    Resource,
    ResourceKind,
    SettingsDiffer,
    Volume,
    VolumeStore,
    inode_limit,
)
from .engines import Engine, identify
from .exits import EVENTS, Exit, Exits
from .oomwatch import DOCKER_CGROUPS, OomWatch
from .settings import container_kwargs  # also imported from here (tests, bench)

T = TypeVar("T")
# Where volumes go: "auto" (on this host when the engine can see our mounts, see
# hostvolumes.py, else in the engine), or always "host", or always "engine".
VolumeSetting = Literal["auto", "host", "engine"]

# How long a SIGKILL we did not send waits for the engine's late "oom" event (see _wait).
OOM_EVENT_WINDOW_S = 2.0
_ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)
# An attached stdin's "detach" keys are eaten by the engine, which then ends the attach
# while the container runs on. The default (Ctrl-P Ctrl-Q) would steal keys an agent's
# interface uses; the engine has no "none", so a sequence nobody types.
DETACH_KEYS = "ctrl-],ctrl-^,ctrl-],ctrl-^,ctrl-],ctrl-^"


def connect(max_pool_size: int = 64, timeout: int = 120) -> docker.DockerClient:
    """A client for the engine in the environment (DOCKER_HOST or the default socket)."""
    return docker.from_env(max_pool_size=max_pool_size, timeout=timeout)


def runtimes_of(info: dict[str, Any]) -> dict[str, list[str]]:
    """The OCI runtimes in an engine's `info`, each with its arguments."""
    runtimes = info.get("Runtimes") or {}
    return {name: list((spec or {}).get("runtimeArgs") or []) for name, spec in runtimes.items()}


class DockerBackend(Backend):
    holds_containers = True

    def __init__(
        self,
        client: docker.DockerClient,
        threads: int = 64,
        volumes: VolumeSetting = "auto",
        engine: Engine | None = None,
    ) -> None:
        self._api: docker.APIClient = client.api
        self.client = client
        # Docker unless told (engine.py identifies it once per process, before this).
        self.engine = engine or identify({}, {})
        self._podman = self.engine.podman
        # Podman's containers, and gVisor's on a Docker on this host (see oomwatch.py).
        self._oom_watches: dict[str, OomWatch] = {}
        self._gvisor_here: set[str] = set()
        self._profile_written = False  # Podman only: its seccomp profile file
        self._volumes = volumes
        self._store: VolumeStore | None = None
        self.volume_store_reason = ""  # why the store chosen is the one it is
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="docker")
        self._readers: dict[str, threading.Thread] = {}
        self._reader_errors: dict[str, BaseException] = {}
        self._killed: set[str] = set()  # containers we sent SIGKILL ourselves
        self._image_envs: dict[str, dict[str, str]] = {}  # image id -> its Env
        self._terminals: dict[str, Any] = {}  # attach sockets' owners, kept until removal
        self._gated: set[str] = set()  # created held: started with their stdin attached
        self._gates: dict[str, Any] = {}  # a held container's stdin, until its release
        self._exits = Exits(lambda: self._api.events(filters=EVENTS, decode=True))

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))
        except docker.errors.ImageNotFound as error:
            raise ImageMissing(str(error.explanation or error)) from None
        except _ENGINE_ERRORS as error:
            raise BackendError(_describe(error)) from None

    async def create(self, spec: ContainerSpec) -> str:
        return await self._call(self._create_checked, spec)

    def _create_checked(self, spec: ContainerSpec) -> str:
        """Create, then read the container back (one inspect, a few ms) and compare it with
        what was asked: an engine that dropped a setting never starts the node."""
        if self._podman and not self._profile_written:
            self._write_podman_profile()
        kwargs = container_kwargs(spec, self._api, self._podman)
        container_id = str(self._api.create_container(**kwargs)["Id"])
        try:
            attrs = self._api.inspect_container(container_id)
            image_env = self._image_env(kwargs["image"])
            differ = readback.differences(kwargs, attrs, image_env, self._podman)
        except BaseException:
            with contextlib.suppress(*_ENGINE_ERRORS):
                self._api.remove_container(container_id, force=True, v=True)
            raise
        if not differ:
            if spec.gated:
                self._gated.add(container_id)
            if spec.oci_runtime == "runsc" and not self._podman and self.socket_path:
                self._gvisor_here.add(container_id)
            self._exits.follow(container_id)
            return container_id
        message = f"the engine did not apply these settings: {', '.join(differ)}"
        try:
            self._api.remove_container(container_id, force=True, v=True)
        except _ENGINE_ERRORS as error:
            message += f"; removing container {container_id[:12]} failed: {_describe(error)}"
            raise SettingsDiffer(message + " (`sandbox-orch gc` removes it)") from None
        raise SettingsDiffer(message + "; the container was removed before it started")

    def _write_podman_profile(self) -> None:
        """Podman reads a seccomp profile only from a file on its own host (seccomp.py);
        it is written there once, named by its content, root's alone."""
        why = hostvolumes.unavailable(self.socket_path)
        if why is not None:
            raise BackendError(f"Podman's seccomp profile cannot be put on its host: {why}")
        path = Path(PODMAN_PROFILE_PATH)
        if not path.is_file() or path.read_text() != PODMAN_PROFILE:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            temporary = path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(PODMAN_PROFILE)
            os.replace(temporary, path)
        self._profile_written = True

    def _image_env(self, image: str) -> dict[str, str]:
        """The image's own environment (the engine merges it into the container's). Kept
        per image id, which preflight's image_id() has asked already; a name is asked
        again, as it may name another image by now."""
        env = self._image_envs.get(image)
        if env is None:
            env = self._inspect_image(image)[1]
        return env

    def _inspect_image(self, image: str) -> tuple[str, dict[str, str]]:
        attrs = self._api.inspect_image(image)
        env = readback.environment_of((attrs.get("Config") or {}).get("Env"))
        self._image_envs[str(attrs["Id"])] = env
        return str(attrs["Id"]), env

    async def start(self, container_id: str, sink: OutputSink | None) -> None:
        await self._call(self._attach_and_start, container_id, sink)

    def _attach_and_start(self, container_id: str, sink: OutputSink | None) -> None:
        if container_id in self._gated:
            # Its gate's stdin, attached before start: the "go" is written here later.
            self._gates[container_id] = self._api.attach_socket(
                container_id, {"stdin": 1, "stream": 1}
            )
        if sink is not None:
            self._attach_output(container_id, sink)
        self._watch_oom(container_id)
        self._api.start(container_id)

    def _watch_oom(self, container_id: str) -> None:
        """Podman, and gVisor on Docker: its memory cgroup watched from its creation
        (call before start)."""
        if self._podman:
            self._oom_watches[container_id] = OomWatch(container_id)
        elif container_id in self._gvisor_here:
            self._oom_watches[container_id] = OomWatch(container_id, cgroups=DOCKER_CGROUPS)

    def _attach_output(self, container_id: str, sink: OutputSink) -> None:
        # Attach before start, so not one byte of output is missed.
        frames = self._api.attach(container_id, stdout=True, stderr=True, stream=True, demux=True)
        reader = threading.Thread(
            target=self._read, args=(container_id, frames, sink), daemon=True, name="output"
        )
        reader.start()
        self._readers[container_id] = reader

    def _read(self, container_id: str, frames: Any, sink: OutputSink) -> None:
        try:
            for stdout, stderr in frames:
                if stdout:
                    sink.write("stdout", stdout)
                if stderr:
                    sink.write("stderr", stderr)
        except BaseException as error:  # reported by wait(), never lost
            self._reader_errors[container_id] = error

    async def start_terminal(self, container_id: str) -> socket.socket:
        return await self._call(self._attach_terminal_and_start, container_id)

    def _attach_terminal_and_start(self, container_id: str) -> socket.socket:
        # Attached before start, as output is: the first screen is never lost.
        params = {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1, "detachKeys": DETACH_KEYS}
        raw = self._api.attach_socket(container_id, params)
        # The socket's owner (see _socket_of) is kept until the container is removed.
        self._terminals[container_id] = raw
        sock = _socket_of(raw)
        if not isinstance(sock, socket.socket):
            raise BackendError("interactive terminals need the engine on a Unix or TCP socket")
        self._watch_oom(container_id)
        self._api.start(container_id)
        return sock

    async def release(self, container_id: str) -> None:
        gate = self._gates.pop(container_id, None)
        if gate is None:
            raise BackendError(f"container {container_id[:12]} is not held")
        await self._call(_say_go, gate)

    async def resize(self, container_id: str, rows: int, columns: int) -> None:
        await self._call(self._api.resize, container_id, height=rows, width=columns)

    async def wait(self, container_id: str) -> ExitStatus:
        announced = await self._first_exit(container_id)
        return await self._call(self._collect, container_id, announced)

    async def _first_exit(self, container_id: str) -> Exit:
        """The exit from the engine's `die` event or its `wait`, whichever comes first
        (see exits.py); a failed `wait` is an engine error either way."""
        exited = self._exits.exited(container_id)
        waited = asyncio.ensure_future(self._call(self._api.wait, container_id))
        pending: set[asyncio.Future[Any]] = {waited} if exited is None else {waited, exited}
        try:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in pending:
                future.cancel()  # a `wait` already sent ends with the container anyway
        if exited is not None and exited in done:
            return exited.result()
        return Exit(int(waited.result()["StatusCode"]), oom_seen=None)

    def _collect(self, container_id: str, announced: Exit) -> ExitStatus:
        reader = self._readers.pop(container_id, None)
        if reader is not None:
            reader.join()  # the streams close when the container's last process exits
        error = self._reader_errors.pop(container_id, None)
        if error is not None:
            raise BackendError(f"reading output failed: {_describe(error)}")
        exit_code, oom_killed = announced.exit_code, bool(announced.oom_seen)
        ours = container_id in self._killed
        if self._podman:
            return ExitStatus(exit_code, exit_code == 137 and not ours and self._oom(container_id))
        late = exit_code == 137 and not oom_killed and not ours
        if announced.oom_seen is None or late:  # asked of the engine only when needed
            state = self._api.inspect_container(container_id)["State"]
            oom_killed = bool(state["OOMKilled"])
            if late and not oom_killed:
                oom_killed = self._oom(container_id) or self._late_oom(
                    container_id, state["StartedAt"]
                )
        return ExitStatus(exit_code=exit_code, oom_killed=oom_killed)

    def _oom(self, container_id: str) -> bool:
        """Did the kernel count an OOM kill in its memory cgroup (oomwatch.py)? False
        when it is not watched.
        The count is read when the kill wakes the watcher, before the exit is reported;
        only a watcher that never got to register is waited for, briefly."""
        watch = self._oom_watches.get(container_id)
        if watch is None:
            return False
        watch.done.wait(OOM_EVENT_WINDOW_S)
        return watch.killed

    def _late_oom(self, container_id: str, started_at: str) -> bool:
        """Was a SIGKILL we did not send the OOM killer's? The engine sets OOMKilled from an
        event that can come after the exit (seen under load with gVisor), so its event log
        is asked, from the container's start, for a short while; it answers at once when
        the event came already."""
        since = calendar.timegm(time.strptime(started_at[:19], "%Y-%m-%dT%H:%M:%S"))
        events = self._api.events(
            since=since,
            until=time.time() + OOM_EVENT_WINDOW_S,
            filters={"container": container_id, "event": "oom"},
            decode=True,
        )
        try:
            return next(iter(events), None) is not None
        finally:
            events.close()

    async def kill(self, container_id: str) -> None:
        # Already stopped or gone: the goal, stopped, holds. A real engine fault will show
        # again in remove(), which does not forgive it.
        self._killed.add(container_id)
        with contextlib.suppress(BackendError):
            await self._call(self._api.kill, container_id)

    async def remove(self, container_id: str) -> None:
        self._readers.pop(container_id, None)
        self._terminals.pop(container_id, None)
        self._killed.discard(container_id)
        self._gated.discard(container_id)
        self._gvisor_here.discard(container_id)
        self._exits.forget(container_id)
        watch = self._oom_watches.pop(container_id, None)
        if watch is not None:
            watch.stop()
        gate = self._gates.pop(container_id, None)
        if gate is not None:  # removed still held: its command never ran
            _close_socket(gate)
        try:
            await self._call(self._api.remove_container, container_id, force=True, v=True)
        except BackendError as error:
            if "No such container" not in str(error) and "is already in progress" not in str(error):
                raise

    async def image_id(self, image: str) -> str:
        try:
            return (await self._call(self._inspect_image, image))[0]
        except BackendError as error:
            if "No such image" in str(error):
                raise ImageMissing(f"image {image} is not built") from None
            raise

    async def info(self) -> dict[str, Any]:
        """The engine's `info` (runtimes, cgroups, security options)."""
        return dict(await self._call(self._api.info))

    @property
    def socket_path(self) -> str | None:
        """The engine's Unix socket (the SDK keeps it on its Unix adapter only); None when
        the engine is reached otherwise (TCP, SSH): then it is not on this host."""
        adapter = getattr(self._api, "_custom_adapter", None)
        path = getattr(adapter, "socket_path", None)
        return str(path) if path else None

    async def oci_runtimes(self) -> dict[str, list[str]]:
        info = await self.info()
        return runtimes_of(info)

    async def labelled(
        self, label: str, value: str | None = None, kinds: tuple[ResourceKind, ...] = ALL_KINDS
    ) -> list[Resource]:
        selector = {"label": f"{label}={value}" if value is not None else label}
        found: list[Resource] = []
        if "container" in kinds:
            containers = await self._call(self._api.containers, all=True, filters=selector)
            found += [Resource("container", c["Id"], c.get("Labels") or {}) for c in containers]
        if "network" in kinds:
            networks = await self._call(self._api.networks, filters=selector)
            found += [Resource("network", n["Id"], n.get("Labels") or {}) for n in networks]
        if "volume" in kinds:
            volumes = (await self._call(self._api.volumes, filters=selector)).get("Volumes") or []
            found += [Resource("volume", v["Name"], v.get("Labels") or {}) for v in volumes]
        return found

    async def remove_resource(self, resource: Resource) -> None:
        try:
            if resource.kind == "container":
                await self._call(self._api.remove_container, resource.id, force=True, v=True)
            elif resource.kind == "network":
                await self._call(self._api.remove_network, resource.id)
            else:
                await self._call(self._remove_volume, resource.id)
        except BackendError as error:
            if "No such" not in str(error) and "not found" not in str(error):
                raise

    async def volume_store(self) -> VolumeStore:
        if self._store is None:
            self._store = self._choose_store()
        return self._store

    def _choose_store(self) -> VolumeStore:
        # Podman before 4.8 cannot size-cap its own tmpfs volumes: only the host's will do.
        capped = self.engine.tmpfs_volumes
        if self._volumes == "engine" and capped:
            self.volume_store_reason = "as configured"
            return "engine"
        why = hostvolumes.unavailable(self.socket_path)  # no socket path, no host store
        if why is None:
            self.volume_store_reason = "the engine shares this host's mounts"
            return "host"
        if not capped:
            raise BackendError(
                f"{self.engine.name} {self.engine.version} cannot cap the size of its own "
                f"volumes (before 4.8), and volumes cannot be kept on this host: {why}"
            )
        if self._volumes == "host":
            raise BackendError(f"volumes cannot be kept on this host: {why}")
        self.volume_store_reason = why
        return "engine"

    async def create_volume(
        self, name: str, labels: dict[str, str], size: int, owner: str
    ) -> Volume:
        if await self.volume_store() == "host":
            return await self._call(self._create_host_volume, name, labels, size, owner)
        uid, gid = owner.split(":")
        # The local driver turns noexec/nosuid/nodev into mount flags, as hostvolumes does.
        tmpfs = f"size={size},nr_inodes={inode_limit(size)},uid={uid},gid={gid},mode=0700"
        options = {"type": "tmpfs", "device": "tmpfs", "o": f"{tmpfs},noexec,nosuid,nodev"}
        created = await self._call(
            self._api.create_volume, name, driver="local", driver_opts=options, labels=labels
        )
        return Volume(str(created["Name"]))

    def _create_host_volume(
        self, name: str, labels: dict[str, str], size: int, owner: str
    ) -> Volume:
        # The labelled volume first: whatever happens next, gc can find it.
        options = {"type": "none", "o": "bind", "device": str(hostvolumes.path_of(name))}
        self._api.create_volume(name, driver="local", driver_opts=options, labels=labels)
        try:
            return Volume(name, hostvolumes.mount(name, size, owner))
        except BaseException:
            self._api.remove_volume(name, force=True)
            raise

    async def read_only_view(self, name: str, volume: Volume, labels: dict[str, str]) -> Volume:
        if volume.host_path is not None:
            return await self._call(self._create_host_view, name, volume.host_path, labels)
        # The engine's own volume is mounted (by its holder) at its mountpoint; the local
        # driver binds it there and remounts the bind with all these flags.
        source = (await self._call(self._api.inspect_volume, volume.name))["Mountpoint"]
        options = {"type": "none", "device": source, "o": "bind,ro,noexec,nosuid,nodev"}
        created = await self._call(
            self._api.create_volume, name, driver="local", driver_opts=options, labels=labels
        )
        return Volume(str(created["Name"]))

    def _create_host_view(self, name: str, source: Path, labels: dict[str, str]) -> Volume:
        options = {"type": "none", "o": "bind", "device": str(hostvolumes.path_of(name))}
        self._api.create_volume(name, driver="local", driver_opts=options, labels=labels)
        try:
            return Volume(name, hostvolumes.view(name, source))
        except BaseException:
            self._api.remove_volume(name, force=True)
            raise

    def _remove_volume(self, name: str) -> None:
        hostvolumes.unmount(name)  # first: the labelled volume outlives the mount
        self._api.remove_volume(name, force=True)

    async def run_in(self, container_id: str, argv: list[str]) -> tuple[int, bytes]:
        def run() -> tuple[int, bytes]:
            exec_id = self._api.exec_create(container_id, argv, stdout=True, stderr=False)["Id"]
            output = self._api.exec_start(exec_id)
            return int(self._api.exec_inspect(exec_id)["ExitCode"]), bytes(output)

        return await self._call(run)

    async def export(self, container_id: str, path: str, consume: Callable[[BinaryIO], T]) -> T:
        def run() -> T:
            # get_archive, but holding the response: a consumer that stops early (an
            # artifact past its budget, e.g. a sparse 1T file the engine would stream as
            # zeros) closes it, so the engine stops sending instead of streaming on.
            url = self._api._url("/containers/{0}/archive", container_id)
            response = self._api._get(url, params={"path": path}, stream=True)
            try:
                chunks = self._api._stream_raw_result(response, 1 << 20, False)
                return consume(_ChunkReader(chunks))
            finally:
                response.close()

        return await self._call(run)

    async def close(self) -> None:
        self._exits.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()


class _ChunkReader(io.RawIOBase):
    """A file object over an iterator of byte chunks (the engine's archive stream)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


def _say_go(gate: Any) -> None:
    """The gate's line, then the end of its stdin (the command's is /dev/null)."""
    try:
        _socket_of(gate).sendall(b"go\n")
    except OSError as error:
        raise BackendError(f"releasing a held container failed: {_describe(error)}") from None
    finally:
        _close_socket(gate)


def _socket_of(raw: Any) -> socket.socket:
    """An attach's socket: on a Unix socket the SDK hands back the socket's SocketIO,
    which owns it (and closes it when collected)."""
    return getattr(raw, "_sock", raw)


def _close_socket(raw: Any) -> None:
    with contextlib.suppress(OSError):
        _socket_of(raw).close()
    with contextlib.suppress(OSError):
        raw.close()


def _describe(error: BaseException) -> str:
    if isinstance(error, docker.errors.APIError) and error.explanation:
        return str(error.explanation)
    return str(error) or type(error).__name__
