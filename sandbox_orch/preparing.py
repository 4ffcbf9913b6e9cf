"""Load, plan and admit: what `validate`, `plan` and `run` check before the engine.

Apart from the orchestrator, which runs plans, so that the commands that only check a
workflow do not import what runs one (the engine's client, asyncio, the views)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .agents.budgets import Budget
    from .planning import Plan
    from .policy import Policy
    from .sandbox import Sandbox


@dataclass(frozen=True)
class Prepared:
    plan: Plan
    policy: Policy
    sandboxes: dict[str, Sandbox]
    # What the whole run may spend: the workflow's budget under the policy's ceilings
    # (agents/admission.run_budget); None when neither sets one.
    budget: Budget | None = None


def prepare(workflow_path: Path, policy_path: Path) -> Prepared:
    """Load, plan and admit: everything `run` checks before touching the engine. Pure
    apart from reading the two files; raises InputRefused (exit 2) on any problem."""
    from .admission import admit
    from .agents.admission import run_budget
    from .loading import load_workflow
    from .planning import make_plan
    from .policy import load_policy

    policy = load_policy(policy_path)
    document, workflow = load_workflow(workflow_path)
    plan = make_plan(document, workflow)
    sandboxes = admit(plan, policy)
    return Prepared(plan, policy, sandboxes, run_budget(plan, policy))
