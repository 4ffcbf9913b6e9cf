"""A run's NetworkPolicies: its node pods reach nothing and nothing reaches them, except
that the nodes granted egress reach the run's egress-proxy pod on its port.

Three policies, as NetworkPolicies only ever add what they allow: one selects every node
pod of the run and allows nothing (deny-all, both directions); one selects only those
labelled for egress and allows TCP to the proxy pod (selected by the run's label and its
role, never by address); one selects the proxy pod and lets in only those nodes, on its
port, while it may reach out anywhere: which upstream a node may reach is the proxy's
own check (its allowlists, and no private address unless opted in), and it resolves
names, so it needs the cluster's DNS. No DNS: a node names no host itself; it talks to the proxy by
address (SANDBOX_ORCH_EGRESS_PROXY), and the proxy resolves and checks each upstream
(egress/__init__.py). They are enforced only by a network plugin that implements
NetworkPolicy (Calico, Cilium, ...): on one that does not, the API accepts them silently.
"""

from __future__ import annotations

from typing import Any

from ...execution import OWNER_LABEL, RUN_LABEL
from .labels import EGRESS_LABEL, ROLE_LABEL, label_value
from .names import PREFIX

PROXY_ROLE = "egress-proxy"


def run_network_policies(
    run_id: str, owner: str, namespace: str, proxy_port: int
) -> list[dict[str, Any]]:
    run = label_value(run_id)
    nodes = {RUN_LABEL: run, ROLE_LABEL: "node"}
    proxy = {RUN_LABEL: run, ROLE_LABEL: PROXY_ROLE}
    deny = _policy(f"{PREFIX}-{run_id}-deny", run_id, owner, namespace, nodes)
    deny["spec"].update(ingress=[], egress=[])
    to_proxy = _policy(
        f"{PREFIX}-{run_id}-egress", run_id, owner, namespace, {**nodes, EGRESS_LABEL: "proxy"}
    )
    to_proxy["spec"].update(
        ingress=[],
        egress=[
            {
                "to": [{"podSelector": {"matchLabels": proxy}}],
                "ports": [{"protocol": "TCP", "port": proxy_port}],
            }
        ],
    )
    proxy_policy = _policy(f"{PREFIX}-{run_id}-proxy", run_id, owner, namespace, proxy)
    proxy_policy["spec"].update(
        ingress=[
            {
                "from": [{"podSelector": {"matchLabels": {**nodes, EGRESS_LABEL: "proxy"}}}],
                "ports": [{"protocol": "TCP", "port": proxy_port}],
            }
        ],
        egress=[{}],  # anywhere: see above
    )
    return [deny, to_proxy, proxy_policy]


def _policy(
    name: str, run_id: str, owner: str, namespace: str, selected: dict[str, str]
) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {RUN_LABEL: label_value(run_id)},
            "annotations": {RUN_LABEL: run_id, OWNER_LABEL: owner},
        },
        "spec": {
            "podSelector": {"matchLabels": selected},
            "policyTypes": ["Ingress", "Egress"],
        },
    }
