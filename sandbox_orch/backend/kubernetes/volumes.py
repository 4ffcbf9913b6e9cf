"""A node's volumes on a cluster: all of them memory `emptyDir`s, each with a size limit.

- each tmpfs of the policy (`/tmp`): read-write, its size;
- each artifact the node produces: read-write, the policy's artifact limit. The pod's
  `holder` container (job.py) mounts them read-only under HOLDER_ROOT and keeps the pod,
  and so them, after the node's container ends: their use is measured and their files
  archived there over the exec API, and the Job is deleted once they are copied;
- each input artifact and each mount (`mounts:`; a cluster has no host directory to bind,
  and hostPath is forbidden): read-only in the node's container. Their content is put
  there before the node runs, by the `deliver` init container: it mounts them read-write
  and waits in sandbox-orch-gate while the backend copies into it over the exec API (the
  same safe copy rules as on Docker), then it is told "go" through GATE (a FIFO in a
  small emptyDir of its own) and exits; only then does the node's container start,
  seeing them read-only.

Memory-backed volumes count against the pod's memory limit, as Docker's tmpfs mounts count
against the container's. An emptyDir has no inode limit and no noexec (Docker's volumes
have both): the README lists it among the differences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...planning import PlannedNode
from ...sandbox import Sandbox
from ..base import HOLDER_ROOT
from .quantities import byte_quantity

GATE = "/gate/go"  # the `deliver` container's own (job.py); the node never mounts it
GATE_SIZE = 64 * 1024


@dataclass(frozen=True)
class NodeVolumes:
    volumes: list[dict[str, Any]]
    mounts: list[dict[str, Any]]  # the node's container's
    delivered: list[dict[str, Any]]  # the `deliver` init container's (read-write)
    held: list[dict[str, Any]]  # the `holder` container's: the artifacts (read-only)


def _memory(name: str, size: int) -> dict[str, Any]:
    return {"name": name, "emptyDir": {"medium": "Memory", "sizeLimit": byte_quantity(size)}}


def node_volumes(node: PlannedNode, sandbox: Sandbox, workspace_limit: int) -> NodeVolumes:
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    delivered: list[dict[str, Any]] = []
    held: list[dict[str, Any]] = []

    def add(name: str, size: int, target: str, read_only: bool) -> None:
        volumes.append(_memory(name, size))
        mounts.append({"name": name, "mountPath": target, "readOnly": read_only})
        if read_only:
            delivered.append({"name": name, "mountPath": target, "readOnly": False})

    for index, (path, size) in enumerate(sorted(sandbox.tmpfs.items())):
        add(f"tmpfs-{index}", size, path, read_only=False)
    for index, artifact in enumerate(node.artifacts):
        add(f"artifact-{index}", sandbox.artifact_limit, artifact.path, read_only=False)
        target = f"{HOLDER_ROOT}/{artifact.name}"
        held.append({"name": f"artifact-{index}", "mountPath": target, "readOnly": True})
    for index, needed in enumerate(node.inputs):
        add(f"input-{index}", sandbox.artifact_limit, needed.path, read_only=True)
    for index, mount in enumerate(sandbox.mounts):
        # A read-write mount's changes could not come back from the pod: refused before
        # a run (checks.py); the manifest makes what it asks all the same.
        add(f"mount-{index}", workspace_limit, mount.target, read_only=mount.read_only)
    if delivered:
        volumes.append(_memory("gate", GATE_SIZE))
        delivered.append({"name": "gate", "mountPath": GATE.rsplit("/", 1)[0], "readOnly": False})
    return NodeVolumes(volumes, mounts, delivered, held)
