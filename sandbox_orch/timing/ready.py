"""A run that must wait for something of its caller's before any node starts (`single`:
its workspace copy), with the first nodes' containers prepared meanwhile.

The wait is the run's own: the prepared containers are held by their gate
(execution.NodeRunner.prepare) until their node's first attempt releases them, which the
scheduler starts only after the wait; if what is awaited fails or the run is interrupted
meanwhile, the caller removes them unrun (NodeRunner.close).

Pure apart from `wait_ready`, which only awaits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from ..planning import Plan
from .ahead import preparable
from .countdown import StartCancelled


def roots_to_prepare(plan: Plan, room: int) -> list[str]:
    """Up to `room` nodes with no needs (they start first) whose containers may be
    prepared ahead of time (timing/ahead.preparable) and that run unless interrupted (no
    condition to judge first)."""
    roots = [
        name
        for name, node in plan.nodes.items()
        if not node.needs and node.condition is None and preparable(node)
    ]
    return roots[: max(room, 0)]


async def wait_ready(ready: Awaitable[object], interrupt: asyncio.Event) -> None:
    """Until `ready` is done (its error raised), or StartCancelled on an interrupt
    meanwhile (`ready` is left to its owner, who stops it)."""
    work = asyncio.ensure_future(ready)
    stop = asyncio.ensure_future(interrupt.wait())
    try:
        await asyncio.wait([work, stop], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    if not work.done():
        raise StartCancelled("interrupted before the run started; nothing was started")
    work.result()
