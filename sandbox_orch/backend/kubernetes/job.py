"""A node's attempt as a batch/v1 Job: one pod, never restarted, hardened as on Docker.

The runner's own timer decides a node's timeout from its container's start, as on
Docker; the Job's activeDeadlineSeconds is the cluster-side backstop for when the runner
is gone (its host died), so it allows DEADLINE_GRACE more, which also covers scheduling
and the image pull (the deadline counts from the Job's start).

A node that produces artifacts gets a second container, the `holder` (the base image,
running `sleep`, never the node's code): the pod stays Running after the node's container
ends, so its memory emptyDirs stay too until the backend has measured and copied them
over the exec API (in the holder, never beside the node's code) and deleted the Job.
Its deadline allows COPY_GRACE more for that copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ...egress.proxy import CONTAINER_DIR
from ...execution import _phased
from ...planning import PlannedNode
from ...sandbox import INIT, NOFILE, Sandbox
from ..base import HOLDER_CPUS, HOLDER_IMAGE, HOLDER_MEMORY
from .env import has_egress, node_env
from .labels import EGRESS_LABEL, node_metadata
from .names import job_name, secret_name
from .quantities import byte_quantity, cpu_quantity
from .security import container_security_context, pod_isolation, pod_security_context
from .settings import ClusterSettings, checked_namespace, pinned_image, runtime_class
from .volumes import GATE, node_volumes

DEADLINE_GRACE = 60
COPY_GRACE = 600  # seconds: a producer's artifacts copied after its end (at most 1 GiB)
# The root is read-only and every volume is in memory: only the kubelet's copy of the
# container's log is written to the node's disk (rotated by the kubelet), and this bounds
# it (the pod is evicted past it).
EPHEMERAL_STORAGE = 64 * 1024**2
CONTAINER = "node"
HOLDER = "holder"
EGRESS_VOLUME = "egress"
# File in /run/egress -> its key in the node's Secret (not an environment name: policy
# secrets are, so none can collide with these).
EGRESS_KEYS = {"node.pem": "egress-node.pem", "ca.pem": "egress-ca.pem"}
GATE_SCRIPT = 'mkfifo "$1" 2>/dev/null; IFS= read -r word < "$1"; [ "$word" = go ]'


@dataclass(frozen=True)
class NodeAttempt:
    """Which attempt of which node of which run, and who owns it."""

    run_id: str
    owner: str  # host:pid:start, as on Docker (an annotation here)
    attempt: int = 1
    proxy: str | None = None  # the run's egress-proxy pod, `ip:port` (nodes with egress)


def limited(argv: tuple[str, ...], sandbox: Sandbox) -> list[str]:
    """`prlimit` sets what Docker's ulimits do (a Pod has no field for them): no core
    dumps, NOFILE files, and under gVisor RLIMIT_NPROC, its pids limit (see
    Sandbox.pids_mechanism; the kubelet's podPidsLimit is the node-wide backstop)."""
    limits = [f"--nofile={NOFILE}", "--core=0"]
    if sandbox.pids_mechanism == "rlimit_nproc":
        limits.append(f"--nproc={sandbox.pids}")
    return ["prlimit", *limits, "--", *argv]


def node_argv(node: PlannedNode, sandbox: Sandbox) -> list[str]:
    """tini (sandbox.INIT) is PID 1, as on Docker: a Pod has no init of its own."""
    argv = node.argv
    if has_egress(sandbox):
        argv = ("sandbox-orch-egress", *_phased(sandbox), *argv)
    return [*INIT, *limited(argv, sandbox)]


def resources(cpus: float, memory: int) -> dict[str, Any]:
    """Requests equal to limits: the pod is "Guaranteed", first to keep its memory."""
    amounts = {
        "cpu": cpu_quantity(cpus),
        "memory": byte_quantity(memory),
        "ephemeral-storage": byte_quantity(EPHEMERAL_STORAGE),
    }
    return {"requests": dict(amounts), "limits": dict(amounts)}


def node_job(
    node: PlannedNode, sandbox: Sandbox, at: NodeAttempt, settings: ClusterSettings
) -> dict[str, Any]:
    name = job_name(at.run_id, node.name, at.attempt)
    labels, annotations = node_metadata(at.run_id, node.name, at.owner, at.attempt, sandbox.pids)
    if has_egress(sandbox):
        labels[EGRESS_LABEL] = "proxy"
    image = pinned_image(settings, sandbox.image)
    volumes = node_volumes(node, sandbox, settings.workspace_limit)
    if has_egress(sandbox):
        volumes.volumes.append(egress_volume(secret_name(name)))
        volumes.mounts.append({"name": EGRESS_VOLUME, "mountPath": CONTAINER_DIR, "readOnly": True})
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": "Always",  # by digest: the same image, the registry's access check
        "command": node_argv(node, sandbox),
        "env": node_env(sandbox, secret_name(name), at.proxy),
        "resources": resources(sandbox.cpus, sandbox.memory),
        "securityContext": container_security_context(sandbox.user, sandbox.oci_runtime),
        "volumeMounts": volumes.mounts,
        "stdin": False,
        "tty": False,
        "terminationMessagePolicy": "File",
    }
    if sandbox.workdir:
        container["workingDir"] = sandbox.workdir
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        **pod_isolation(settings.user_namespaces and sandbox.oci_runtime != "runsc"),
        "securityContext": pod_security_context(sandbox.user, sandbox.oci_runtime),
        "terminationGracePeriodSeconds": 0,  # a kill is SIGKILL, as on Docker
        "containers": [container],
        "volumes": volumes.volumes,
    }
    deadline = math.ceil(sandbox.timeout) + DEADLINE_GRACE
    if volumes.held:
        holder = pinned_image(settings, HOLDER_IMAGE)
        pod["containers"].append(_holder(holder, sandbox, volumes.held))
        deadline += COPY_GRACE
    if volumes.delivered:
        pod["initContainers"] = [_deliverer(image, sandbox, volumes.delivered)]
    return job_manifest(name, (labels, annotations), pod, sandbox.oci_runtime, deadline, settings)


def job_manifest(
    name: str,
    metadata: tuple[dict[str, str], dict[str, str]],
    pod: dict[str, Any],
    oci_runtime: str,
    deadline: int,
    settings: ClusterSettings,
) -> dict[str, Any]:
    """A Job of one pod, never retried (retries are the scheduler's, with their own
    attempt), its pod under the OCI runtime's RuntimeClass; `metadata`: (labels,
    annotations), the Job's and its pod's."""
    labels, annotations = metadata
    runtime = runtime_class(settings, oci_runtime)
    if runtime is not None:
        pod["runtimeClassName"] = runtime
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": checked_namespace(settings),
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": deadline,
            "ttlSecondsAfterFinished": settings.ttl_after_finished,
            "template": {
                "metadata": {"labels": dict(labels), "annotations": dict(annotations)},
                "spec": pod,
            },
        },
    }


def egress_volume(secret: str) -> dict[str, Any]:
    """The node's way to the run's proxy pod (sandbox-orch-egress): its client
    certificate and key, and the run's CA, from its own Secret (egress.py puts them
    there). Readable by the node's group (fsGroup), as it runs as that group."""
    items = [{"key": key, "path": path} for path, key in EGRESS_KEYS.items()]
    return {
        "name": EGRESS_VOLUME,
        "secret": {"secretName": secret, "items": items, "defaultMode": 0o440, "optional": False},
    }


def _holder(image: str, sandbox: Sandbox, mounts: list[dict[str, Any]]) -> dict[str, Any]:
    """Keeps the pod, and its artifacts' emptyDirs, after the node's container ends; the
    backend's commands (`stat -f`, `du`, `tar`) run here. Hardened as the node is."""
    return {
        "name": HOLDER,
        "image": image,
        "imagePullPolicy": "Always",
        "command": [*INIT, *limited(("sleep", "infinity"), sandbox)],
        "resources": resources(HOLDER_CPUS, HOLDER_MEMORY),
        "securityContext": container_security_context(sandbox.user, sandbox.oci_runtime),
        "volumeMounts": mounts,
        "stdin": False,
        "tty": False,
        "terminationMessagePolicy": "File",
    }


def _deliverer(image: str, sandbox: Sandbox, mounts: list[dict[str, Any]]) -> dict[str, Any]:
    """Holds the pod before the node runs while the backend copies inputs and mounts in
    over the exec API (see volumes.py); then an exec writes "go" into its gate, a FIFO in
    its own emptyDir (no attach needed, no polling), it exits 0, and the node's container
    starts. A "go" written before the FIFO exists lands in a plain file, read the same."""
    return {
        "name": "deliver",
        "image": image,
        "imagePullPolicy": "Always",
        "command": [*INIT, *limited(("sh", "-c", GATE_SCRIPT, "sh", GATE), sandbox)],
        "resources": resources(sandbox.cpus, sandbox.memory),
        "securityContext": container_security_context(sandbox.user, sandbox.oci_runtime),
        "volumeMounts": mounts,
        "stdin": False,
        "tty": False,
    }
