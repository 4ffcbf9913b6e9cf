"""`sandbox-orch doctor`: what this machine offers, and what each policy would get here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .backend import BackendError
from .backend.docker import DockerBackend
from .backend.hostvolumes import ROOT as HOST_VOLUMES
from .orchestrator import runtime_problem
from .policy import POLICIES_DIR, Policy, load_policy
from .units import format_size


@dataclass(frozen=True)
class Isolation:
    policy: str
    path: str
    runnable: bool
    summary: str


def shipped_policies() -> list[Path]:
    return sorted(POLICIES_DIR.glob("*.yaml"))


def isolation_of(policy: Policy, runtimes: dict[str, list[str]]) -> Isolation:
    """The isolation a node would get under `policy` on an engine offering `runtimes`. Pure."""
    runtime = policy.oci_runtime
    problem = runtime_problem(runtime, runtimes) if runtime != "runc" else None
    if problem:
        return Isolation(policy.name, policy.path, False, f"refused: {problem}")
    kind = "gVisor user-space kernel (runsc)" if runtime == "runsc" else "Linux namespaces (runc)"
    pids = "RLIMIT_NPROC inside gVisor" if runtime == "runsc" else "the pids cgroup"
    limits, egress = policy.limits, ", ".join(policy.egress) or "none"
    return Isolation(
        policy.name,
        policy.path,
        True,
        f"{kind}; user {policy.user}; network none, egress: {egress}; "
        f"ceilings cpus {limits.cpus:g}, memory {format_size(limits.memory)}, "
        f"pids {limits.pids} (enforced by {pids}), timeout {limits.timeout:g}s",
    )


def policy_isolations(runtimes: dict[str, list[str]]) -> list[Isolation]:
    return [isolation_of(load_policy(path), runtimes) for path in shipped_policies()]


async def describe_volume_store(backend: DockerBackend) -> str:
    """Where artifact volumes will live, and why (both are memory-backed and capped)."""
    try:
        store = await backend.volume_store()
    except BackendError as error:
        return f"unavailable: {error}"
    why = backend.volume_store_reason
    if store == "host":
        return f"capped tmpfs mounts on this host, under {HOST_VOLUMES} ({why})"
    return f"capped tmpfs volumes in the engine, each kept by a holder container ({why})"
