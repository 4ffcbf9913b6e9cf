"""Labels and annotations of what a run creates on a cluster.

Kubernetes label values are short and plain (at most 63 characters of letters, digits,
`-`, `_` and `.`, starting and ending alphanumeric); our values are not always: the owner
token is `host:pid:start`, and a node name may end with `-` or `_`. Every value goes into an
annotation as it is (they take any string), and into a label only when legal; otherwise
the label holds `h.` and a hash of it, which no legal node name or run id can spell (they
have no `.`), so selecting by label never matches another node's pods. The keys are the
Docker backend's (one vocabulary for both: `sandbox-orch.run`, ...), all legal keys.
"""

from __future__ import annotations

import hashlib
import re

from ...execution import ATTEMPT_LABEL, NODE_LABEL, OWNER_LABEL, RUN_LABEL

ROLE_LABEL = "sandbox-orch.role"  # "node" or "egress-proxy": what NetworkPolicies select
EGRESS_LABEL = "sandbox-orch.egress"  # "proxy" on the pods of nodes granted egress
PIDS_ANNOTATION = "sandbox-orch.pids"  # the node's pids limit (no Pod field holds it)

LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_PREFIX = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
LABEL_KEY = re.compile(rf"^(?:({_PREFIX})/)?({_NAME})$")
MAX_VALUE = 63
MAX_PREFIX = 253


def legal_label_value(value: str) -> bool:
    return len(value) <= MAX_VALUE and LABEL_VALUE.match(value) is not None


def legal_label_key(key: str) -> bool:
    match = LABEL_KEY.match(key)
    if match is None:
        return False
    prefix, name = match.group(1), match.group(5)
    return len(name) <= MAX_VALUE and (prefix is None or len(prefix) <= MAX_PREFIX)


def label_value(value: str) -> str:
    """`value` if it is a legal label value, else `h.` and 32 hex digits of its SHA-256."""
    if legal_label_value(value):
        return value
    return "h." + hashlib.sha256(value.encode()).hexdigest()[:32]


def node_metadata(
    run_id: str, node: str, owner: str, attempt: int, pids: int
) -> tuple[dict[str, str], dict[str, str]]:
    """(labels, annotations) of a node's Job and Pod. The owner is an annotation only:
    `gc` reads it from there (it is never legal as a label value)."""
    labels = {
        RUN_LABEL: label_value(run_id),
        NODE_LABEL: label_value(node),
        ATTEMPT_LABEL: str(attempt),
        ROLE_LABEL: "node",
    }
    annotations = {
        RUN_LABEL: run_id,
        NODE_LABEL: node,
        OWNER_LABEL: owner,
        ATTEMPT_LABEL: str(attempt),
        PIDS_ANNOTATION: str(pids),
    }
    return labels, annotations
