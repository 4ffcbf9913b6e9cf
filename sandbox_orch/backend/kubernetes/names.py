"""Object names on the cluster: DNS-1123 labels (at most 63 of `a-z`, `0-9`, `-`).

A Job's name must be a label (its pods carry it as the `job-name` label), so a node name
that cannot appear in one as it is (an `_`, a trailing `-`, or too long) is replaced by
its legal part and a hash of the whole: names stay unique per run, node and attempt.
"""

from __future__ import annotations

import hashlib
import re

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_NAME = 63
PREFIX = "sandbox-orch"


def legal_name(name: str) -> bool:
    return len(name) <= MAX_NAME and DNS_LABEL.match(name) is not None


def job_name(run_id: str, node: str, attempt: int) -> str:
    """`sandbox-orch-RUN-NODE-ATTEMPT`, with NODE shortened and hashed when needed."""
    head, tail = f"{PREFIX}-{run_id}-", f"-{attempt}"
    room = MAX_NAME - len(head) - len(tail)
    if DNS_LABEL.match(node) and len(node) <= room:
        name = f"{head}{node}{tail}"
    else:
        digest = hashlib.sha256(node.encode()).hexdigest()[:8]
        kept = re.sub(r"[^a-z0-9-]", "-", node)[: max(0, room - len(digest) - 1)].strip("-")
        name = f"{head}{kept}-{digest}{tail}" if kept else f"{head}{digest}{tail}"
    if not legal_name(name):  # a run id we did not make (never from new_run_id)
        raise ValueError(f"run id {run_id!r} cannot be part of a Kubernetes name")
    return name


def secret_name(job: str) -> str:
    """The node's own Secret (its secrets' values; created and deleted with its Job)."""
    return f"{job}-env"  # a Secret's name may be a DNS subdomain of up to 253
