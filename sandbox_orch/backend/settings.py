"""The settings a node's container is created with: the hardening lives here, nowhere else.

Pure: `container_kwargs` turns a ContainerSpec into `create_container`'s arguments (the
API client is used only for `create_host_config`, which needs no engine). The read-back
(readback.py) checks the created container against these same arguments.
"""

from __future__ import annotations

from typing import Any

import docker
from docker.types import LogConfig, Mount, Ulimit

from ..mounts import BindMount
from ..sandbox import CAP_DROP, INIT, NOFILE, cgroup_pids_limit
from ..seccomp import PODMAN_PROFILE_PATH, RUNSC_SECURITY_OPT
from .base import ContainerSpec, VolumeMount

# The engine keeps a small capped log beside our own stream: enough for `docker logs`
# while debugging, never enough to fill the host disk.
LOG_CONFIG = LogConfig(type="json-file", config={"max-size": "1m", "max-file": "1"})
NO_LOG = LogConfig(type="none")
HOSTNAME = "sandbox"


def container_kwargs(
    spec: ContainerSpec, api: docker.APIClient, podman: bool = False
) -> dict[str, Any]:
    """The create_container arguments for a spec: the hardening lives here, nowhere else.

    Benchmarks build the raw-SDK baseline from this same function, so both sides run
    containers with identical settings. `podman`: the engine is Podman (engines.py),
    which needs two settings more (see _tmpfs and _ulimits).
    """
    host_config = api.create_host_config(
        cap_drop=list(CAP_DROP),
        security_opt=_security_options(spec, podman),
        read_only=True,
        tmpfs=_tmpfs(spec, podman),
        network_mode="none",
        ipc_mode="private",
        # The node sees its own cgroup as the root, never the host's hierarchy (and
        # with it the container's id); API 1.41.
        cgroupns="private",
        privileged=False,
        pids_limit=cgroup_pids_limit(spec.pids, spec.pids_mechanism),
        mem_limit=spec.memory,
        memswap_limit=spec.memory,  # memory = swap: no swapping past the limit
        nano_cpus=int(spec.cpus * 1e9),
        ulimits=_ulimits(spec, podman),
        log_config=LOG_CONFIG if spec.engine_log else NO_LOG,
        restart_policy={"Name": "no"},
        runtime=spec.oci_runtime,
        mounts=[_bind(m) for m in spec.mounts]
        + [_bind(kept) for m in spec.mounts for kept in _kept_read_only(m)]
        + [_mask(path) for m in spec.mounts for path in m.masks]
        + [_volume(v, podman) for v in spec.volumes],
    )
    return {
        "image": spec.image,
        "entrypoint": list(INIT),  # never the image's: our init, whatever the image says
        "command": list(spec.argv),
        "user": spec.user,
        "environment": dict(spec.env),
        "working_dir": spec.workdir,
        "labels": dict(spec.labels),
        "name": spec.name,
        # The same for every node: the engine's default is the container's short id.
        "hostname": HOSTNAME,
        "host_config": host_config,
        "network_disabled": True,
        # Only an interactive session (`single` with no prompt) has a terminal, and only
        # it and a held container (for its gate's "go") an open stdin, which the SDK
        # makes "once": closed when our attach ends. The read-back checks all three.
        "stdin_open": spec.tty or spec.gated,
        "tty": spec.tty,
    }


def _bind(mount: BindMount) -> Mount:
    """Non-recursive: a file system mounted below the source on the host is not shown."""
    bind = Mount(mount.target, mount.source, "bind", mount.read_only, propagation="rprivate")
    bind["BindOptions"]["NonRecursive"] = True
    return bind


def _volume(volume: VolumeMount, podman: bool) -> Mount:
    """A run's volume. On Podman, a host-store one is bound from its mount instead: Podman
    remounts a named volume with only its own options (nosuid, nodev), which drops the
    volume's noexec and a view's read-only, and chowns it on first use (a view refuses);
    a bind it neither chowns nor strips, adding the noexec, nosuid and nodev its source
    has. The labelled engine volume stays, for gc."""
    if podman and volume.host_bind is not None:
        return _bind(volume.host_bind)
    # no_copy: nothing from the image is copied into a run's volume
    return Mount(volume.target, volume.volume, "volume", volume.read_only, no_copy=True)


def _kept_read_only(mount: BindMount) -> list[BindMount]:
    """A read-write mount's git directories, hooks and `.git` files, bound again read-only
    over it (the engine mounts deeper targets after shallower ones)."""
    source, target = mount.source.rstrip("/"), mount.target.rstrip("/")
    return [BindMount(f"{source}/{rel}", f"{target}/{rel}", True) for rel in mount.read_only_inside]


def _mask(target: str) -> Mount:
    """An empty read-only file system over `target` (the run store inside a mount)."""
    return Mount(target, None, "tmpfs", read_only=True, tmpfs_size=4096, tmpfs_mode=0o555)


def _security_options(spec: ContainerSpec, podman: bool) -> list[str]:
    """no-new-privileges always; the engine's default seccomp profile under runc, ours
    under gVisor and on Podman (see seccomp.py for why the defaults cannot be used)."""
    if spec.oci_runtime == "runsc":
        return ["no-new-privileges", RUNSC_SECURITY_OPT]
    if podman:
        return ["no-new-privileges", f"seccomp={PODMAN_PROFILE_PATH}"]
    return ["no-new-privileges"]


# gVisor ignores cgroup namespaces: when the engine's cgroup mount is at /sys/fs/cgroup,
# it puts the node in a cgroup of its own kernel named after the container's id, which
# /proc/self/cgroup then shows. An empty read-only tmpfs there instead leaves the node in
# gVisor's root cgroup. The limits are still enforced by the host's cgroups around the
# sandbox, and gVisor sizes /proc/meminfo from the memory limit.
GVISOR_CGROUP_MASK = {"/sys/fs/cgroup": "ro,noexec,nosuid,nodev,size=4k"}


# Podman's API mounts a writable tmpfs, uncapped and exec-able, at /run and /var/tmp
# of a read-only container (its --read-only-tmpfs, which the API cannot turn off). An
# empty read-only one asked for there instead leaves nothing writable but our /tmp.
PODMAN_READ_ONLY_TMPFS = {
    "/run": "ro,noexec,nosuid,nodev,size=4k",
    "/var/tmp": "ro,noexec,nosuid,nodev,size=4k",
}
# Podman sets RLIMIT_NPROC to 1048576 unless asked, more than root may raise it to where
# it lacks CAP_SYS_RESOURCE (runc then fails to start the container). The limit is per
# user id, shared by every node's processes (all run as the same user), so it is a
# host-wide ceiling, not the node's limit: that stays the pids cgroup.
PODMAN_NPROC = 4096


def _tmpfs(spec: ContainerSpec, podman: bool) -> dict[str, str]:
    mounts = {path: f"rw,noexec,nosuid,nodev,size={size}" for path, size in spec.tmpfs.items()}
    if spec.oci_runtime == "runsc":
        mounts.update(GVISOR_CGROUP_MASK)
    if podman:
        mounts = {**PODMAN_READ_ONLY_TMPFS, **mounts}  # the spec's own tmpfs wins
    return mounts


def _ulimits(spec: ContainerSpec, podman: bool) -> list[Ulimit]:
    limits = [Ulimit(name="nofile", soft=NOFILE, hard=NOFILE), Ulimit(name="core", soft=0, hard=0)]
    if spec.pids_mechanism == "rlimit_nproc":
        limits.append(Ulimit(name="nproc", soft=spec.pids, hard=spec.pids))
    elif podman:
        limits.append(Ulimit(name="nproc", soft=PODMAN_NPROC, hard=PODMAN_NPROC))
    return limits
