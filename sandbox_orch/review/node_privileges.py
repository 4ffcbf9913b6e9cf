"""`--workflow`: each node's effective privileges, as admission granted them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..agents.flags import permission_mode

if TYPE_CHECKING:
    from ..planning import Plan, PlannedNode
    from ..sandbox import Sandbox


def privileges(plan: Plan, sandboxes: dict[str, Sandbox]) -> dict[str, dict[str, Any]]:
    """Each node's effective sandbox as admission granted it (`Sandbox.describe()`), with
    the runtime it runs and, for an agent, what its `agent:` block lets it do. Nothing
    re-derived: what describe() says is what the node gets."""
    return {
        name: {"runtime": node.runtime.name, **sandboxes[name].describe(), **_agent(node)}
        for name, node in plan.nodes.items()
        if name in sandboxes
    }


def _agent(node: PlannedNode) -> dict[str, Any]:
    """The agent's settings as its CLI gets them (only for an agent run from `prompt`)."""
    if not node.runtime.agent or node.request.prompt is None:
        return {}
    settings = node.request.agent
    shown: dict[str, Any] = {
        "model": (settings.model if settings else None) or "the CLI's default",
        "permission_mode": permission_mode(node.runtime.name, settings),
    }
    if settings is not None:
        chosen = settings.model_dump(exclude_none=True, exclude={"model", "permission_mode"})
        shown.update(chosen)
    if node.request.budget is not None:
        limits = node.request.budget.limits().items()
        shown["budget"] = {metric: f"{limit.limit:g} ({limit.mode})" for metric, limit in limits}
    return {"agent": shown}
