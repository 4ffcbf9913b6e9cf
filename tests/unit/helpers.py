"""Build plans and admitted sandboxes from YAML text, without files or an engine."""

from __future__ import annotations

import textwrap

from sandbox_orch.admission import admit
from sandbox_orch.loading import validate_document
from sandbox_orch.planning import Plan, make_plan
from sandbox_orch.policy import DEFAULT_POLICY, Policy, load_policy
from sandbox_orch.sandbox import Sandbox
from sandbox_orch.workflow import Workflow
from sandbox_orch.yamlsafe import load_text


def plan_of(text: str, path: str = "wf.yaml") -> Plan:
    document = load_text(textwrap.dedent(text), path)
    return make_plan(document, validate_document(document, Workflow))


def default_policy() -> Policy:
    return load_policy(DEFAULT_POLICY)


def admitted(text: str, policy: Policy | None = None) -> tuple[Plan, dict[str, Sandbox]]:
    plan = plan_of(text)
    return plan, admit(plan, policy or default_policy())
