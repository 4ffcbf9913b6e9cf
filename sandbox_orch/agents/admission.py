"""Agent nodes against the policy's `agents:` section (models, permission modes, tools
that may never be allowed, budget ceilings). Pure; called by admission.py, which
collects the refusals with the workflow's file and line.

Where the policy restricts agent settings, only the `agent:` block may set them: a node
that runs its own command on an agent image, passes extra CLI arguments, or sets an
environment variable that picks a model or loads settings could override whatever the
block says, so each of those is refused too.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable

from ..planning import Plan, PlannedNode
from ..policy import AgentRules, Policy
from ..runtimes import PRESETS
from ..yamlsafe import Loc
from .budgets import Budget, over_ceiling, with_ceiling
from .flags import SETTING_ENV, permission_mode

Refuse = Callable[[Loc, str], None]
_AGENT_IMAGES = frozenset(runtime.image for runtime in PRESETS.values() if runtime.agent)


def run_budget(plan: Plan, policy: Policy) -> Budget | None:
    """What the whole run may spend: the workflow's budget, with the policy's ceiling for
    each metric the workflow leaves unset (admission has refused one above it)."""
    return with_ceiling(plan.workflow.budget, policy.agents.budget)


def check_budget(budget: Budget | None, rules: AgentRules, loc: Loc, refuse: Refuse) -> None:
    """A workflow's or a node's budget above the policy's ceiling (or only warning where
    the ceiling blocks)."""
    if rules.budget is None:
        return
    for metric, why in over_ceiling(budget, rules.budget):
        refuse((*loc, metric), f"budget {metric}: {why} (agents.budget.{metric})")


def check_node(node: PlannedNode, rules: AgentRules, refuse: Refuse) -> None:
    check_budget(node.request.budget, rules, (*node.loc, "budget"), refuse)
    if not rules.restricts_settings:
        return
    if not node.runtime.preset and _image_name(node.runtime.image) in _AGENT_IMAGES:
        refuse(
            ("runtimes", node.runtime.name, "image"),
            f"the policy restricts agent settings (agents:), and a custom runtime on "
            f"{node.runtime.image} would run the agent outside them; use its preset",
        )
    if not node.runtime.agent:
        return
    _check_raw(node, refuse)
    if node.request.prompt is not None:
        _check_model(node, rules, refuse)
        _check_mode(node, rules, refuse)
        _check_tools(node, rules, refuse)


def _check_raw(node: PlannedNode, refuse: Refuse) -> None:
    why = "the policy restricts agent settings (agents:)"
    if node.request.prompt is None:
        refuse(
            (*node.loc, "command"),
            f"{why}: an agent node runs its CLI from `prompt` and `agent:`, not its own "
            "command, which could set anything",
        )
    elif node.request.command:
        refuse(
            (*node.loc, "command"),
            f"{why}: extra CLI arguments could override them; use a workflow node's `agent:`",
        )
    for name in node.env:
        if name in SETTING_ENV[node.runtime.name]:
            refuse((*node.loc, "env", name), f"{why}: {name} would override them")


def _check_model(node: PlannedNode, rules: AgentRules, refuse: Refuse) -> None:
    if rules.models is None:
        return
    allowed = ", ".join(rules.models) or "none"
    model = node.request.agent.model if node.request.agent else None
    if model is None:
        refuse(
            (*node.loc, "agent"),
            f"the policy allows only some models (agents.models: {allowed}): set agent.model",
        )
    elif not any(fnmatch.fnmatchcase(model, pattern) for pattern in rules.models):
        refuse(
            (*node.loc, "agent", "model"),
            f"model {model!r} is not allowed by the policy (agents.models: {allowed})",
        )


def _check_mode(node: PlannedNode, rules: AgentRules, refuse: Refuse) -> None:
    if rules.permission_modes is None:
        return
    settings = node.request.agent
    mode = permission_mode(node.runtime.name, settings)
    if mode in rules.permission_modes:
        return
    chosen = settings is not None and settings.permission_mode is not None
    loc = (*node.loc, "agent", "permission_mode") if chosen else (*node.loc, "runtime")
    allowed = ", ".join(rules.permission_modes) or "none"
    shown = f"permission mode {mode!r}" + ("" if chosen else f" ({node.runtime.name}'s default)")
    refuse(loc, f"{shown} is not allowed by the policy (agents.permission_modes: {allowed})")


def _check_tools(node: PlannedNode, rules: AgentRules, refuse: Refuse) -> None:
    """A never-allowed tool may not be pre-approved, with or without a specifier
    (`Bash(git *)` is Bash); names compare without case, refusing more rather than less."""
    settings = node.request.agent
    for index, tool in enumerate((settings.allowed_tools if settings else None) or ()):
        name = tool.partition("(")[0].lower()
        for pattern in rules.never_allow_tools:
            if fnmatch.fnmatchcase(name, pattern.lower()):
                refuse(
                    (*node.loc, "agent", "allowed_tools", index),
                    f"tool {tool!r} may never be allowed (agents.never_allow_tools: {pattern})",
                )
                break


# A reference's tag (after the last `/`) and digest: `name[:tag][@digest]`.
_TAG_AND_DIGEST = re.compile(r"(:[^/:@]*)?(@.*)?$")


def _image_name(image: str) -> str:
    """`name[:tag][@digest]` without tag and digest (a registry's port stays)."""
    return _TAG_AND_DIGEST.sub("", image)
