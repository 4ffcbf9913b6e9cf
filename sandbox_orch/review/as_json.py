"""The report as `--format json` (schema sandbox-orch/policy-review@1)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ..policy import Policy
from .model import Report


def _policy_ref(policy: Policy) -> dict[str, str]:
    return {"name": policy.name, "path": policy.path, "sha256": policy.sha256}


def to_json(report: Report) -> dict[str, Any]:
    """The `--format json` document (schema sandbox-orch/policy-review@1)."""
    return {
        "schema": "sandbox-orch/policy-review@1",
        "policy": _policy_ref(report.policy),
        "summary": {**report.counts(), "total": len(report.findings)},
        "fail_on": report.fail_on,
        "failed": report.failed,
        "findings": [asdict(f) for f in report.findings],
        "workflow": report.workflow,
        "privileges": report.privileges,
        "against": _policy_ref(report.against) if report.against else None,
        "changes": [asdict(c) for c in report.changes] if report.changes is not None else None,
    }
