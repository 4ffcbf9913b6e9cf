"""The container backend interface.

The scheduler and the node runner speak only this interface, as an HTTP client speaks to
a transport: Docker is one implementation (docker.py), an in-memory fake for scheduler
tests is another (memory.py), and Kubernetes (kubernetes/backend.py) is a third.

Security-relevant settings are not options here: `ContainerSpec` has no field for
privileged mode, added capabilities, host namespaces, devices or seccomp, so no caller can
ask for them (CONTRACT 1).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from socket import socket
from typing import TYPE_CHECKING, BinaryIO, Literal, Protocol, TypeVar

from ..mounts import BindMount

if TYPE_CHECKING:
    from ..egress.core import RunEgress
    from ..planning import PlannedNode
    from ..sandbox import Sandbox

T = TypeVar("T")
Stream = Literal["stdout", "stderr"]
ResourceKind = Literal["container", "network", "volume"]
ALL_KINDS: tuple[ResourceKind, ...] = ("container", "network", "volume")
# Where a volume's content lives: "host", a mount on this host that keeps it with no
# container; "engine", inside the engine, kept only while some container mounts it;
# "pod", inside the producer's own pod (a cluster's emptyDir), kept while that pod is:
# the producer's container id is then its volumes' holder.
VolumeStore = Literal["host", "engine", "pod"]
# The holder of "engine" and "pod" volumes: an idle container of ours (it runs `sleep`,
# never a node's code) mounting them read-only, where their use is measured and their
# files archived. Its limits leave room for runc's own exec (a Go process that joins the
# holder's cgroup with its threads and pages): at 8 pids and 16 MiB an exec under load
# could die on start ("read init-p: connection reset by peer"), failing a node that was
# within limits.
HOLDER_IMAGE = "sandbox-orch/base"
HOLDER_ROOT = "/held"
HOLDER_CPUS = 0.25
HOLDER_MEMORY = 64 * 1024**2
HOLDER_PIDS = 32
# A volume's size does not bound its number of files (empty files and directories cost a
# tmpfs no blocks), so every volume also gets at most one inode per page of its size: a
# non-empty file costs a page anyway, so only empty entries ever meet this bound first.
BYTES_PER_INODE = 4096
MIN_INODES = 1024


def inode_limit(size: int) -> int:
    """How many files and directories (its root included) a volume of `size` may hold."""
    return max(MIN_INODES, size // BYTES_PER_INODE)


@dataclass(frozen=True)
class Volume:
    name: str
    host_path: Path | None = None  # its content, readable here (the "host" store only)


@dataclass(frozen=True)
class VolumeMount:
    volume: str  # a volume this run created
    target: str
    read_only: bool
    # A host-store volume (hostvolumes.py) as a bind of its mount, read-only for a view:
    # how Podman mounts it (settings.py), never Docker.
    host_bind: BindMount | None = None


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    argv: tuple[str, ...]
    user: str
    labels: dict[str, str]
    cpus: float
    memory: int
    pids: int
    tmpfs: dict[str, int]
    # cgroup: the pids cgroup; rlimit_nproc: RLIMIT_NPROC, with the cgroup as a backstop
    # (for gVisor, see Sandbox.pids_mechanism)
    pids_mechanism: Literal["cgroup", "rlimit_nproc"] = "cgroup"
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    oci_runtime: str = "runc"
    mounts: tuple[BindMount, ...] = ()
    volumes: tuple[VolumeMount, ...] = ()
    # False for nodes holding secrets: the engine keeps no log file of their output.
    engine_log: bool = True
    # An interactive session (`single` with no prompt): created with a terminal and its
    # stdin open, started with `start_terminal` instead of `start`.
    tty: bool = False
    # Prepared ahead of time: its argv starts with sandbox-orch-gate (images/base), which
    # holds the command until `release`; created with stdin open once, for the "go".
    gated: bool = False
    # The node and sandbox (as admitted, for this attempt) the spec was made from: a
    # backend that builds its own manifests from them (Kubernetes) reads them; the
    # Docker backend does not.
    origin: tuple[PlannedNode, Sandbox] | None = None


@dataclass(frozen=True)
class ExitStatus:
    exit_code: int
    oom_killed: bool = False


@dataclass(frozen=True)
class Resource:
    """Something a run created on the engine, found by label (for gc and sweeps)."""

    kind: ResourceKind
    id: str
    labels: dict[str, str]


class OutputSink(Protocol):
    """Receives a container's output while it runs. Called from the backend's reader."""

    def write(self, stream: Stream, data: bytes) -> None: ...


class BackendError(Exception):
    """The engine failed (not the command): the node is `errored`."""


class ImageMissing(BackendError):
    pass


class SettingsDiffer(BackendError):
    """The engine created a container without some setting we asked for (read back
    before it started); the container was removed."""


class Backend(ABC):
    # Whether `release` works: the scheduler prepares containers ahead of time only then.
    holds_containers = False

    @abstractmethod
    async def create(self, spec: ContainerSpec) -> str:
        """Create (not start) a container and read it back; return its id. One that the
        engine did not make as `spec` says is removed, and SettingsDiffer raised naming
        the settings (never their values)."""

    @abstractmethod
    async def start(self, container_id: str, sink: OutputSink | None) -> None:
        """Start it; its output is streamed into `sink` from now until it exits (with no
        sink, output is not read at all)."""

    async def start_terminal(self, container_id: str) -> socket:
        """Start a `tty` container with its terminal attached before it starts (no byte
        of its first screen is lost): the socket carries keystrokes in and the screen
        out, raw, until it exits (then it reads EOF). The caller closes it."""
        raise BackendError(f"{type(self).__name__} has no interactive terminals")

    async def resize(self, container_id: str, rows: int, columns: int) -> None:
        """Tell a `tty` container's terminal its window size (it gets a SIGWINCH)."""
        raise BackendError(f"{type(self).__name__} has no interactive terminals")

    async def release(self, container_id: str) -> None:
        """Let a started `gated` container run its command (its gate reads "go"). Not
        releasing it and removing it instead means its command never ran."""
        raise BackendError(f"{type(self).__name__} cannot hold containers")

    @abstractmethod
    async def wait(self, container_id: str) -> ExitStatus:
        """Return once it has exited and all its output has reached the sink."""

    @abstractmethod
    async def kill(self, container_id: str) -> None:
        """SIGKILL it; a container that already stopped is not an error."""

    @abstractmethod
    async def remove(self, container_id: str) -> None:
        """Remove it and its anonymous volumes; one already gone is not an error."""

    @abstractmethod
    async def image_id(self, image: str) -> str:
        """The local image's id; raise ImageMissing if it is not there."""

    @abstractmethod
    async def oci_runtimes(self) -> dict[str, list[str]]:
        """OCI runtimes the engine offers (runc, runsc, ...), each with its arguments."""

    @abstractmethod
    async def labelled(
        self, label: str, value: str | None = None, kinds: tuple[ResourceKind, ...] = ALL_KINDS
    ) -> list[Resource]:
        """Resources of `kinds` carrying `label` (with `value`, if given)."""

    @abstractmethod
    async def remove_resource(self, resource: Resource) -> None:
        """Remove one labelled resource, killing a container first; gone is not an error."""

    @abstractmethod
    async def volume_store(self) -> VolumeStore:
        """Where `create_volume` keeps content (an "engine" volume needs a holder)."""

    @abstractmethod
    async def create_volume(
        self, name: str, labels: dict[str, str], size: int, owner: str
    ) -> Volume:
        """A size-capped, memory-backed volume (it cannot fill the host disk), writable by
        `owner` ("uid:gid"), holding at most `inode_limit(size)` inodes, mounted
        noexec, nosuid and nodev."""

    @abstractmethod
    async def read_only_view(self, name: str, volume: Volume, labels: dict[str, str]) -> Volume:
        """A read-only, noexec, nosuid, nodev view of `volume`, for its consumers. It is
        read-only at its source: mount it with `read_only=False`, since a read-only mount
        of it (runc remounts it read-only) would drop noexec, nosuid and nodev."""

    @abstractmethod
    async def run_in(self, container_id: str, argv: list[str]) -> tuple[int, bytes]:
        """Run a command of ours in a running container: (exit code, stdout)."""

    @abstractmethod
    async def export(self, container_id: str, path: str, consume: Callable[[BinaryIO], T]) -> T:
        """Read `path` of a container as a tar stream: `consume(stream)` runs in a worker
        thread and its result is returned. The stream is never buffered whole."""

    def egress_proxy(
        self, run_id: str, owner: str, private_names: Iterable[str], oci_runtime: str
    ) -> RunEgress:
        """The run's egress proxy (created once per run, before its nodes; it starts
        listening with its first node): on this host, a Unix socket per node."""
        from ..egress import EgressProxy

        return EgressProxy(run_id, private_names=private_names)

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
