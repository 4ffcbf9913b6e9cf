"""`sandbox-orch doctor`: what this machine offers, and what each policy would get here."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    pids = (
        "RLIMIT_NPROC inside gVisor, the host's pids cgroup as a backstop"
        if runtime == "runsc"
        else "the pids cgroup"
    )
    limits, egress = policy.limits, ", ".join(policy.egress) or "none"
    return Isolation(
        policy.name,
        policy.path,
        True,
        f"{kind}; user {policy.user}; network none, egress: {egress}; "
        f"ceilings cpus {limits.cpus:g}, memory {format_size(limits.memory)}, "
        f"pids {limits.pids} (enforced by {pids}), timeout {limits.timeout:g}s",
    )


def runtime_state(name: str, runtimes: dict[str, list[str]]) -> str:
    """`doctor`'s word on one OCI runtime: usable (with its arguments), or why not. Pure.
    Present is not usable: an engine can offer runsc without the arguments its seccomp
    profile needs (Podman finds the binary Docker uses), and policies asking for it are
    then refused, so doctor must not call it available."""
    if name not in runtimes:
        return "missing"
    problem = runtime_problem(name, runtimes)
    if problem:
        return f"offered but refused: {problem}"
    args = " ".join(runtimes[name])
    return f"available{f' ({args})' if args else ''}"


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


# What every node gets whatever the engine (CONTRACT 1); checked again on each container
# by reading it back (backend/readback.py).
ALWAYS = (
    "every node: no capabilities, no-new-privileges, read-only root, user 10001, network "
    "none, limits on memory, cpu and pids, a private cgroup namespace; each container is "
    "read back from the engine before it starts"
)


def security_options(info: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """The engine's SecurityOptions (`name=seccomp,profile=default`, ...) by name."""
    found: dict[str, dict[str, str]] = {}
    for entry in info.get("SecurityOptions") or ():
        fields = dict(part.split("=", 1) for part in str(entry).split(",") if "=" in part)
        if "name" in fields:
            found[fields.pop("name")] = fields
    return found


# What differs on Podman (backend/engines.py; README, Podman).
PODMAN_CGROUPNS = (
    "nodes share the engine's cgroup namespace (Podman's API ignores a private one: a "
    "node sees its own cgroup's path)"
)
PODMAN_SECCOMP = "seccomp: sandbox-orch's profile (runc on Podman, and gVisor)"


def protections(
    info: Mapping[str, Any],
    runtimes: dict[str, list[str]],
    runsc_version: str | None,
    podman: bool = False,
) -> list[str]:
    """`doctor`'s lines on what protects nodes on this engine and what does not. Pure."""
    options = security_options(info)
    cgroup = f"v{info.get('CgroupVersion') or '1'}"
    namespace = PODMAN_CGROUPNS if podman else "every node gets a private cgroup namespace"
    lines = [f"cgroups: {cgroup}, driver {info.get('CgroupDriver') or 'unknown'}; {namespace}"]
    if "runsc" in runtimes:
        lines.append(f"runsc version: {runsc_version or 'unknown (not on this host)'}")
    seccomp = options.get("seccomp")
    lines.append(
        f"seccomp: available (engine profile {seccomp.get('profile', 'default')})"
        if seccomp is not None
        else "seccomp: NOT available on this engine"
    )
    for name, title in (("apparmor", "AppArmor"), ("selinux", "SELinux")):
        state = "confines containers" if name in options else "not enabled on this engine"
        lines.append(f"{title}: {state}")
    remapped = "userns" in options
    lines.append(
        "user namespaces: remapped (a node's uid maps to an unprivileged host uid)"
        if remapped
        else "user namespaces: not remapped (uid 10001 in a node is uid 10001 on the host)"
    )
    always = ALWAYS.replace(", a private cgroup namespace", "") if podman else ALWAYS
    protects, lacks = [always], []
    if seccomp is not None and podman:
        protects.append(PODMAN_SECCOMP)
    elif seccomp is not None:
        protects.append("seccomp: the engine's default profile (runc), sandbox-orch's (gVisor)")
    else:
        lacks.append("no seccomp: runc nodes run without a system call filter")
    runsc = "runsc" in runtimes and runtime_problem("runsc", runtimes) is None
    if runsc:
        protects.append("gVisor's user-space kernel, for policies with oci_runtime: runsc")
    else:
        lacks.append("no usable gVisor (runsc): policies asking for it are refused")
    if "apparmor" in options or "selinux" in options:
        protects.append(
            "an LSM (" + ", ".join(n for n in ("apparmor", "selinux") if n in options) + ")"
        )
    else:
        lacks.append("no LSM (AppArmor or SELinux) confines containers on this engine")
    if not remapped:
        lacks.append(
            "no user-namespace remapping: a runc node that escaped its container would be "
            "uid 10001 on the host"
        )
    if "rootless" in options:
        protects.append("a rootless engine")
    lines.append("protects nodes here: " + "; ".join(protects))
    lines.append("does not protect nodes here: " + ("; ".join(lacks) or "nothing missing"))
    return lines


def runtime_version(path: str | None) -> str | None:
    """`PATH --version`'s first line for a runtime binary on this host, or None.

    Only a root-owned executable that no one else may write is run: the path comes from
    the engine's answer, and doctor runs as whoever calls it."""
    if not path:
        return None
    resolved = path if os.path.isabs(path) else shutil.which(path)
    try:
        info = os.stat(resolved) if resolved else None
    except OSError:
        return None
    if info is None or not stat.S_ISREG(info.st_mode) or info.st_uid != 0:
        return None
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or not info.st_mode & stat.S_IXUSR:
        return None
    try:
        done = subprocess.run(
            [str(resolved), "--version"], capture_output=True, text=True, timeout=10, env={}
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = (done.stdout or done.stderr).strip().splitlines()
    return f"{first[0]} ({resolved})" if done.returncode == 0 and first else None
