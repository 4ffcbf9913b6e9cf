"""The results document (CONTRACT 6), built from a finished run. Pure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .agents.usage import total
from .planning import Plan
from .policy import Policy
from .sandbox import Sandbox
from .scheduler import NodeRecord
from .status import NodeStatus, RunStatus

SCHEMA = "sandbox-orch/run-result@1"


@dataclass(frozen=True)
class RunFacts:
    run_id: str
    status: RunStatus
    started_at: datetime
    finished_at: datetime
    image_ids: dict[str, str]


def build_results(
    facts: RunFacts,
    plan: Plan,
    policy: Policy,
    sandboxes: dict[str, Sandbox],
    records: dict[str, NodeRecord],
    violations: dict[str, list[dict[str, str]]] | None = None,
) -> dict[str, Any]:
    nodes = {
        name: _node(plan, name, sandboxes[name], records[name], facts.image_ids)
        for name in plan.nodes
    }
    for name, found in (violations or {}).items():
        nodes[name]["violations"] = found + nodes[name]["violations"]
    counts = Counter(record.status.value for record in records.values())
    return {
        "schema": SCHEMA,
        "run_id": facts.run_id,
        "status": facts.status.value,
        "workflow": {
            "name": plan.workflow.name,
            "path": plan.document.path,
            "sha256": plan.document.sha256,
        },
        "policy": {"name": policy.name, "path": policy.path, "sha256": policy.sha256},
        "started_at": _iso(facts.started_at),
        "finished_at": _iso(facts.finished_at),
        "duration_s": round((facts.finished_at - facts.started_at).total_seconds(), 3),
        "graph": {
            "nodes": list(plan.nodes),
            "edges": [
                {"from": e.source, "to": e.target, "allow_failure": e.allow_failure}
                for e in plan.edges
            ],
        },
        "nodes": nodes,
        "totals": {
            **{status.value: counts.get(status.value, 0) for status in _COUNTED},
            "usage": total_usage(node["usage"] for node in nodes.values()),
        },
    }


_COUNTED = (
    NodeStatus.SUCCEEDED,
    NodeStatus.FAILED,
    NodeStatus.TIMED_OUT,
    NodeStatus.ERRORED,
    NodeStatus.SKIPPED,
    NodeStatus.CANCELLED,
)


def _node(
    plan: Plan, name: str, sandbox: Sandbox, record: NodeRecord, image_ids: dict[str, str]
) -> dict[str, Any]:
    node = plan.nodes[name]
    first, last = (record.attempts[0], record.attempts[-1]) if record.attempts else (None, None)
    return {
        "status": record.status.value,
        "exit_code": last.exit_code if last else None,
        "attempts": len(record.attempts),
        "started_at": _iso(first.started_at) if first else None,
        "finished_at": _iso(last.finished_at) if last else None,
        "duration_s": (
            round((last.finished_at - first.started_at).total_seconds(), 3)
            if first and last
            else None
        ),
        "reason": record.reason,
        "needs": [e.source for e in node.needs],
        "when": node.when,
        "condition_result": record.condition_result,
        "skip_reason": record.skip_reason,
        "runtime": node.runtime.name,
        "image": sandbox.image,
        "image_id": image_ids.get(sandbox.image),
        "outputs": last.outputs if last else {},
        "stdout_tail": last.stdout_tail if last else "",
        "stderr_tail": last.stderr_tail if last else "",
        "output_bytes": last.output_bytes if last else None,
        "oom_killed": bool(last and last.oom_killed),
        # every attempt's, added up (a retried agent spent on each); null for non-agents
        "usage": total(a.usage for a in record.attempts) if _agent_usage(record) else None,
        "artifacts": last.artifacts if last else [],
        "violations": list(last.violations) if last else [],
        **({"setup": last.setup} if last and last.setup is not None else {}),
        "attempt_details": [
            {
                "attempt": a.number,
                "status": a.status.value,
                "exit_code": a.exit_code,
                "oom_killed": a.oom_killed,
                "reason": a.reason,
                "started_at": _iso(a.started_at),
                "finished_at": _iso(a.finished_at),
                "duration_s": a.duration_s,
                **({"usage": a.usage} if a.usage is not None else {}),
            }
            for a in record.attempts
        ],
        "sandbox": sandbox.describe(),
    }


def total_usage(usages: Iterable[dict[str, Any] | None]) -> dict[str, Any]:
    """Tokens, tools and cost summed over nodes; a cost nobody reported counts as 0."""
    return total(usages)


def _agent_usage(record: NodeRecord) -> bool:
    return any(a.usage is not None for a in record.attempts)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
