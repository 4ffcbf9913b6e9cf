"""All the manifests of one run, from what `plan` admits: pure (no client, no network).

From the admitted Sandbox and the PlannedNode rather than from the Docker backend's
ContainerSpec: the spec has no timeout, no secret names (by then its env holds their
values, which must never reach a manifest), and no artifacts (its volumes are Docker
volume names), while the Sandbox is what admission granted, in full.
"""

from __future__ import annotations

from typing import Any

from ...planning import Plan
from ...sandbox import Sandbox
from .env import has_egress
from .job import NodeAttempt, node_job
from .network import run_network_policies
from .proxypod import proxy_job
from .settings import ClusterSettings, checked_namespace


def run_manifests(
    plan: Plan, sandboxes: dict[str, Sandbox], at: NodeAttempt, settings: ClusterSettings
) -> list[dict[str, Any]]:
    """The run's NetworkPolicies, its egress-proxy Job if a node has egress, then each
    node's first attempt's Job, in plan order."""
    namespace = checked_namespace(settings)
    manifests = run_network_policies(at.run_id, at.owner, namespace, settings.proxy_port)
    runtimes = [s.oci_runtime for s in sandboxes.values() if has_egress(s)]
    if runtimes:
        manifests.append(proxy_job(at.run_id, at.owner, runtimes[0], settings))
    return manifests + [
        node_job(node, sandboxes[name], at, settings) for name, node in plan.nodes.items()
    ]
