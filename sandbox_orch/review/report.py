"""The whole report: findings, and with the options, privileges, changes and verdict."""

from __future__ import annotations

from typing import Any

from ..policy import Policy
from .changes import compare
from .findings import review
from .model import Report


def build_report(
    policy: Policy,
    *,
    privileges: dict[str, dict[str, Any]] | None = None,
    workflow: str | None = None,
    against: Policy | None = None,
    fail_on: str | None = None,
) -> Report:
    return Report(
        policy=policy,
        findings=review(policy),
        privileges=privileges,
        workflow=workflow,
        against=against,
        changes=compare(against, policy) if against is not None else None,
        fail_on=fail_on,
    )
