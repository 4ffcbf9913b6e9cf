"""The review in progress (`_Review`, which every rule group adds findings to) and what
the rule groups share about runtimes, model APIs and local images."""

from __future__ import annotations

from typing import Any

from ..policy import Policy
from ..runtimes import PRESETS
from ..yamlsafe import Loc, dotted
from .model import Finding
from .rules import RULES

GENERAL_RUNTIMES = frozenset({"shell", "python", "node"})
AGENT_RUNTIMES = frozenset({"claude", "codex"})
KNOWN_RUNTIMES = frozenset(PRESETS) | GENERAL_RUNTIMES | AGENT_RUNTIMES
MODEL_API_HOSTS = frozenset({"api.anthropic.com", "api.openai.com"})
LOCAL_IMAGE_NAMESPACE = "sandbox-orch/"


class _Review:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.document = policy.document
        self.data: dict[str, Any] = policy.document.data
        self.findings: list[Finding] = []

    def add(
        self, rule_id: str, loc: Loc, title: str, why: str | None = None, fix: str | None = None
    ) -> None:
        rule = RULES[rule_id]
        self.findings.append(
            Finding(
                id=rule.id,
                severity=rule.severity,
                file=self.document.path,
                line=self.document.line_of(loc),
                field=dotted(loc),
                title=title,
                why=why or rule.why,
                fix=fix or rule.fix,
            )
        )

    def has(self, loc: Loc) -> bool:
        return loc in self.document.lines
