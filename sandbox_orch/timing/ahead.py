"""Which nodes get their container ahead of time: created and started while their needs
still run, held by a gate of ours until the scheduler says go (execution.py, images/base
sandbox-orch-gate), so a node whose needs finish starts at once instead of after its
container's create and start (about 250 ms under runc, more under gVisor).

Pure: the scheduler asks with its nodes' states; nothing here touches a container.

A node is prepared only when everything its container is made of is final by then:
- its argv: no `prompt` (rendered from its needs' outputs when it starts);
- its image holds the gate: a preset runtime (a custom image may not have it);
- its artifact inputs: every producer has finished (a running one still writes them);
- its own artifact volumes: none (they are reserved against the run's artifacts_total
  when they are made, which must not happen for a node that may never run);
- no `start_delay` (it would be held for the whole delay).
And only when it is due soon: every need has started or is held itself, and some need
is still unfinished; nearest first, as many as the bound (`--ahead`) allows.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Container
from typing import Protocol

from ..planning import Plan, PlannedNode
from ..sandbox import Sandbox
from ..status import NodeStatus


class Preparer(Protocol):
    """What prepares containers for the scheduler (execution.NodeRunner): the node's
    first attempt then uses the prepared one."""

    def prepare(self, node: PlannedNode, sandbox: Sandbox) -> None: ...

    def discard(self, name: str) -> None:
        """The node will not run (or not from a prepared container): remove it unrun."""


def preparable(node: PlannedNode) -> bool:
    """Whether the node's container may ever be prepared ahead of time (see above)."""
    return (
        node.prompt is None
        and node.runtime.preset
        and not node.artifacts
        and not node.request.start_delay
    )


def dependents(plan: Plan) -> dict[str, tuple[str, ...]]:
    """Each node's direct dependents, in the plan's order."""
    found: dict[str, list[str]] = {name: [] for name in plan.nodes}
    for name, node in plan.nodes.items():
        for edge in node.needs:
            found[edge.source].append(name)
    return {name: tuple(names) for name, names in found.items()}


def due(node: PlannedNode, status: Callable[[str], NodeStatus], held: Container[str] = ()) -> bool:
    """Whether the node is due soon: still pending, every need started or itself held
    (so a chain is prepared as far ahead as the bound allows), some need not finished,
    and every artifact input's producer finished."""
    if status(node.name) != NodeStatus.PENDING or not node.needs:
        return False
    needs = [edge.source for edge in node.needs]
    if any(status(need) == NodeStatus.PENDING and need not in held for need in needs):
        return False
    if all(status(need).finished for need in needs):
        return False  # ready: it is judged now, not prepared
    return all(status(needed.producer).finished for needed in node.inputs)


def to_prepare(
    offered: deque[str],
    plan: Plan,
    status: Callable[[str], NodeStatus],
    held: Container[str],
    room: int,
) -> list[str]:
    """Up to `room` nodes to prepare now, taken from the front of `offered` (nodes one
    of whose needs just started, was prepared or finished). One not due is dropped: it
    is offered again when another of its needs does so. What `room` leaves stays."""
    chosen: list[str] = []
    while offered and len(chosen) < room:
        name = offered.popleft()
        node = plan.nodes[name]
        if name in held or name in chosen or not preparable(node):
            continue
        if due(node, status, {*held, *chosen}):
            chosen.append(name)
    return chosen
