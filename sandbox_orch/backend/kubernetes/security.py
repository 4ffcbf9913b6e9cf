"""The Pod Security "restricted" settings of every node's pod: the hardening lives here.

As for Docker (backend/settings.py), none of it is an option: the Job builder takes no
argument that could weaken it. `restricted.py` checks generated pods against the profile.
"""

from __future__ import annotations

from typing import Any

from ...sandbox import CAP_DROP
from ...seccomp import RUNSC_LOCALHOST_PROFILE


def uid_gid(user: str) -> tuple[int, int]:
    """The policy's `uid:gid` as numbers; Kubernetes has no user names (runAsUser is a
    number, and runAsNonRoot can only check a numeric user)."""
    uid, _, gid = user.partition(":")
    if not (uid.isdigit() and gid.isdigit()):
        raise ValueError(f"user {user!r} is not numeric uid:gid")
    if int(uid) == 0:
        raise ValueError("a node never runs as root")
    return int(uid), int(gid)


def seccomp_profile(oci_runtime: str) -> dict[str, Any]:
    """As on Docker: the runtime's default under runc; under gVisor our own profile
    (seccomp.py: the default one fails `clone3` with EPERM there, so no thread starts,
    and none at all lets a node make namespaces in gVisor's kernel), as a file the
    operator installs on each node, applied by a runsc handler with --oci-seccomp."""
    if oci_runtime == "runsc":
        return {"type": "Localhost", "localhostProfile": RUNSC_LOCALHOST_PROFILE}
    return {"type": "RuntimeDefault"}


def _runs_as(user: str, oci_runtime: str) -> dict[str, Any]:
    """Who runs, and the seccomp profile: the same on the pod and on its container."""
    uid, gid = uid_gid(user)
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": gid,
        "seccompProfile": seccomp_profile(oci_runtime),
    }


def pod_security_context(user: str, oci_runtime: str) -> dict[str, Any]:
    gid = uid_gid(user)[1]
    return {
        **_runs_as(user, oci_runtime),
        # The memory emptyDirs belong to this group, so the node's user can write them.
        "fsGroup": gid,
        "fsGroupChangePolicy": "OnRootMismatch",
        "supplementalGroups": [],
    }


def container_security_context(user: str, oci_runtime: str) -> dict[str, Any]:
    return {
        **_runs_as(user, oci_runtime),
        "allowPrivilegeEscalation": False,  # no_new_privs, as no-new-privileges on Docker
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": list(CAP_DROP)},
    }


def pod_isolation(user_namespace: bool) -> dict[str, Any]:
    """Pod fields that keep the node off the host and away from the cluster's API.

    `user_namespace`: the pod gets its own user namespace (`hostUsers: false`, GA in
    1.36, on by default since 1.33; kernel 6.3+): its uid 10001 is an unprivileged id
    of the host's, so an escape from runc's boundary gains no host user. The caller
    asks it for runc pods only: a kubelet refuses it for gVisor's runtime handler
    (runsc advertises no user-namespace support through the CRI), where the Sentry is
    the boundary."""
    return {
        "hostUsers": not user_namespace,
        "automountServiceAccountToken": False,  # no credentials for the cluster's API
        "enableServiceLinks": False,  # no *_SERVICE_HOST variables naming the cluster
        "hostNetwork": False,
        "hostPID": False,
        "hostIPC": False,
        "shareProcessNamespace": False,
        "hostname": "sandbox",  # the same for every node, as on Docker
    }
