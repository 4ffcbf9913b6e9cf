"""Before a run creates anything on a cluster: is the namespace, are the runtime classes,
and are the nodes what this backend can run? Every refusal is an infrastructure problem
(exit 3, one line), never a downgrade.

- The namespace's Pod Security admission must *enforce* "restricted": our pods meet it
  (restricted.py), and the namespace then refuses any pod that does not, ours included
  if something altered them on the way.
- Each OCI runtime the nodes use must map to a RuntimeClass that exists (or be mapped
  explicitly to the cluster's default, settings.py).
- Not yet on this backend (the README's list): egress (the per-run proxy pod), and
  read-write mounts or mounts of a file. Artifacts are: the producer's pod keeps them
  (job.py), and its consumers' pods are given its copy (deliver.py), as read-only
  mounts are given their source's.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...planning import Plan
from ...sandbox import Sandbox
from .env import has_egress

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
            "egress (the per-run egress-proxy pod)" if has_egress(sandbox)
            else "a read-write mount (a change in its pod could not come back)"
            if any(not m.read_only for m in sandbox.mounts)
            else "a mount of a file (a pod's copy of a mount is a directory)"
            if not all(Path(m.source).is_dir() for m in sandbox.mounts)
            else None
        )  # fmt: skip
        if why:
            return f"node {name!r} needs {why}, which the Kubernetes backend does not do yet"
    return None
