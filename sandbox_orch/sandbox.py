"""The effective sandbox of one node: what admission granted, in full."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from .bounded.limits import DEFAULT_PROMPT_BYTES
from .mounts import BindMount
from .units import format_size

# What every container gets, whatever the policy says (CONTRACT 1). Kept here, in one
# place, so results and the backend cannot disagree about what "hardened" means.
CAP_DROP = ("ALL",)
NOFILE = 1024
# Every node's PID 1: tini, from the base image, forwards signals to the command and
# reaps orphans. In the image rather than an engine's init flag (Docker's --init,
# Podman's catatonit), so the same init runs on every engine and on Kubernetes, which
# has no such flag; the backends set it as the entrypoint, and the read-back checks it.
INIT = ("/usr/bin/tini", "--")


# Under gVisor the host's pids cgroup counts gVisor's own threads besides the node's
# tasks: the sentry's (about 25 when idle) and, on the systrap platform, a stub process
# per sandboxed process plus stub threads as its threads run. Measured on this engine
# (runsc 2024-07-29, host pids.current at peak): idle 25-28; 10 sleeping processes 51,
# 50 135, 100 241, 200 451 (2.1 per process); 50 busy processes 176, 100 busy 211;
# 200 threads of one process, sleeping or blocked, 25-28. So the backstop is 3 per task
# allowed by RLIMIT_NPROC plus 64: a node that stays within its limit never reaches it,
# and a sandbox whose threads run away (a gVisor bug) cannot exhaust the host's pids.
GVISOR_PIDS_PER_TASK = 3
GVISOR_PIDS_BASE = 64


def cgroup_pids_limit(pids: int, mechanism: str) -> int:
    """The engine's pids limit (the host's pids cgroup) for a node allowed `pids` tasks."""
    if mechanism == "rlimit_nproc":
        return GVISOR_PIDS_PER_TASK * pids + GVISOR_PIDS_BASE
    return pids


def pids_enforcement(pids: int, mechanism: str) -> str:
    """What enforces a node's pids limit, in words (results, doctor)."""
    if mechanism == "rlimit_nproc":
        backstop = cgroup_pids_limit(pids, mechanism)
        return (
            f"RLIMIT_NPROC in gVisor's kernel ({pids} tasks), and the host's pids cgroup at "
            f"{backstop} as a backstop (it also counts gVisor's own threads)"
        )
    return f"cgroup pids.max ({pids})"


@dataclass(frozen=True)
class Sandbox:
    image: str
    user: str
    oci_runtime: str
    cpus: float
    memory: int
    memory_ceiling: int  # retries after an OOM may grow memory up to here, never beyond
    pids: int
    timeout: float
    output_limit: int
    tmpfs: dict[str, int]
    artifact_limit: int = 1024**3  # each artifact volume's size
    prompt_limit: int = DEFAULT_PROMPT_BYTES  # an agent's prompt as launched, in bytes
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    mounts: tuple[BindMount, ...] = ()
    egress: tuple[str, ...] = ()  # host:port pairs, through the run's egress proxy
    secrets: tuple[str, ...] = ()  # names only: values are read when the node starts
    # Those the egress proxy adds to the node's requests to an upstream (name -> upstream):
    # the node holds a placeholder. The rest are in its environment.
    brokered: dict[str, str] = field(default_factory=dict)
    # `setup:` (setup phase): its argv, its own egress (only until it ends), its timeout.
    setup_argv: tuple[str, ...] = ()
    setup_egress: tuple[str, ...] = ()
    setup_timeout: float | None = None

    @property
    def pids_mechanism(self) -> str:
        """How the pids limit is enforced. Under gVisor the host's pids cgroup also counts
        gVisor's own threads, so the node's limit is RLIMIT_NPROC in gVisor's kernel,
        which counts only this sandbox's tasks, with the cgroup above it as a backstop
        (cgroup_pids_limit). Under runc, RLIMIT_NPROC would count every container of uid
        10001 on the host: there the cgroup is the right tool."""
        return "rlimit_nproc" if self.oci_runtime == "runsc" else "cgroup"

    def with_memory(self, memory: int) -> Sandbox:
        return replace(self, memory=min(memory, self.memory_ceiling))

    def describe(self) -> dict[str, Any]:
        """The `sandbox` block of a node's results (CONTRACT 6)."""
        return {
            "oci_runtime": self.oci_runtime,
            "user": self.user,
            # The container's network stays `none`; egress goes through the proxy socket.
            "network": "none+egress-proxy"
            if self.egress or self.brokered or self.setup_argv
            else "none",
            "egress": list(self.egress),
            **({"setup_egress": list(self.setup_egress)} if self.setup_argv else {}),
            "secrets": list(self.secrets),
            "secret_delivery": {
                name: f"brokered to {self.brokered[name]}" if name in self.brokered else "env"
                for name in self.secrets
            },
            "read_only_rootfs": True,
            "cap_drop": list(CAP_DROP),
            "image": self.image,
            "tmpfs": {path: format_size(size) for path, size in self.tmpfs.items()},
            "limits": {
                "cpus": self.cpus,
                "memory": format_size(self.memory),
                "pids": self.pids,
                "timeout_s": self.timeout,
            },
            "pids_enforced_by": pids_enforcement(self.pids, self.pids_mechanism),
            "seccomp": (
                "sandbox-orch gVisor profile (namespaces, mounts, keyrings, ptrace refused)"
                if self.oci_runtime == "runsc"
                else "engine default profile"
            ),
            "mounts": [_describe_mount(m) for m in self.mounts],
        }


def _describe_mount(mount: BindMount) -> dict[str, Any]:
    described: dict[str, Any] = {
        "source": mount.source,
        "target": mount.target,
        "mode": "ro" if mount.read_only else "rw",
    }
    if mount.masks:
        described["masked"] = list(mount.masks)  # hidden: the run store inside the source
    if mount.read_only_inside:  # git's directories and hooks in a read-write mount
        target = mount.target.rstrip("/")
        described["read_only_inside"] = [f"{target}/{rel}" for rel in mount.read_only_inside]
    return described
