"""Before a run creates anything on a cluster: is the namespace, are the runtime classes,
and are the nodes what this backend can run? Every refusal is an infrastructure problem
(exit 3, one line), never a downgrade.

- The namespace's Pod Security admission must *enforce* "restricted": our pods meet it
  (restricted.py), and the namespace then refuses any pod that does not, ours included
  if something altered them on the way.
- Each OCI runtime the nodes use must map to a RuntimeClass that exists (or be mapped
  explicitly to the cluster's default, settings.py).
- Not yet on this backend (the README's list): read-write mounts or mounts of a file.
  Artifacts are: the producer's pod keeps them (job.py), and its consumers' pods are
  given its copy (deliver.py), as read-only mounts are given their source's. Egress is:
  through the run's proxy pod (egress.py), whose image must be pinned as the nodes' are.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...planning import Plan
from ...sandbox import Sandbox
from .env import has_egress
from .proxypod import PROXY_IMAGE
from .settings import ClusterSettings, ManifestError, pinned_image

ENFORCE = "pod-security.kubernetes.io/enforce"
PSA_PREFIX = "pod-security.kubernetes.io/"


def pod_security_labels(namespace: Mapping[str, Any] | None) -> dict[str, str]:
    labels = ((namespace or {}).get("metadata") or {}).get("labels") or {}
    return {k: str(v) for k, v in sorted(labels.items()) if k.startswith(PSA_PREFIX)}


def namespace_problem(name: str, namespace: Mapping[str, Any] | None) -> str | None:
    if namespace is None:
        return f"namespace {name!r} does not exist (or this context cannot read it)"
    enforced = pod_security_labels(namespace).get(ENFORCE)
    if enforced != "restricted":
        shown = "no enforce label" if enforced is None else f"enforces {enforced!r}"
        return (
            f'namespace {name!r} does not enforce Pod Security "restricted" ({shown}); '
            f"label it {ENFORCE}=restricted"
        )
    return None


def unsupported(plan: Plan, sandboxes: Mapping[str, Sandbox]) -> str | None:
    """The first node this backend cannot run yet, and why."""
    for name in plan.nodes:
        sandbox = sandboxes[name]
        why = (
            "a read-write mount (a change in its pod could not come back)"
            if any(not m.read_only for m in sandbox.mounts)
            else "a mount of a file (a pod's copy of a mount is a directory)"
            if not all(Path(m.source).is_dir() for m in sandbox.mounts)
            else None
        )  # fmt: skip
        if why:
            return f"node {name!r} needs {why}, which the Kubernetes backend does not do yet"
    return None


def proxy_problem(sandboxes: Mapping[str, Sandbox], settings: ClusterSettings) -> str | None:
    """A run with egress needs the proxy's image pinned for the cluster (proxypod.py)."""
    if not any(has_egress(sandbox) for sandbox in sandboxes.values()):
        return None
    try:
        pinned_image(settings, PROXY_IMAGE)
    except ManifestError as error:
        return f"egress needs the run's proxy pod: {error}"
    return None
