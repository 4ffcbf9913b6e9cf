"""What a review produces: severities, findings, changes between two policies, and the
report that holds them (with `--fail-on`'s verdict)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..policy import Policy

SEVERITIES = ("critical", "high", "medium", "low", "info")
_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class Finding:
    id: str
    severity: str
    file: str
    line: int | None
    field: str
    title: str
    why: str
    fix: str

    def sort_key(self) -> tuple[int, int, str, str]:
        return (_RANK[self.severity], self.line or 0, self.id, self.field)


@dataclass(frozen=True)
class Change:
    direction: str  # widens | narrows | changes
    area: str
    summary: str
    file: str
    line: int | None
    field: str


@dataclass(frozen=True)
class Report:
    policy: Policy
    findings: list[Finding]
    privileges: dict[str, dict[str, Any]] | None = None
    workflow: str | None = None
    against: Policy | None = None
    changes: list[Change] | None = None
    fail_on: str | None = None

    def counts(self) -> dict[str, int]:
        counted = Counter(f.severity for f in self.findings)
        return {severity: counted.get(severity, 0) for severity in SEVERITIES}

    @property
    def failed(self) -> bool:
        return failing(self.findings, self.fail_on)


def failing(findings: Iterable[Finding], fail_on: str | None) -> bool:
    """Whether any finding is at or above `fail_on` (never, without it)."""
    if fail_on is None:
        return False
    return any(_RANK[f.severity] <= _RANK[fail_on] for f in findings)
