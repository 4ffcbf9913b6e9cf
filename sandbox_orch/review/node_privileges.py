"""`--workflow`: each node's effective privileges, as admission granted them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..planning import Plan
    from ..sandbox import Sandbox


def privileges(plan: Plan, sandboxes: dict[str, Sandbox]) -> dict[str, dict[str, Any]]:
    """Each node's effective sandbox as admission granted it (`Sandbox.describe()`), with
    the runtime it runs. Nothing re-derived: what describe() says is what the node gets."""
    return {
        name: {"runtime": node.runtime.name, **sandboxes[name].describe()}
        for name, node in plan.nodes.items()
        if name in sandboxes
    }
