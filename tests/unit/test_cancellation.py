"""A cancellation (Ctrl-C, fail_fast, a budget's stop) is never lost on the way to a
node: Python 3.11's asyncio.wait_for returns the awaited result instead of raising when
the cancellation comes as that call ends (gh-86296), and the node would go on as if
never cancelled (seen: a run hung on a Kubernetes node whose timeout's cancellation was
swallowed by a request finishing at that moment). asyncio.timeout has no such window."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from sandbox_orch.backend.base import ExitStatus
from sandbox_orch.execution import NodeRunner

PACKAGE = Path(__file__).resolve().parents[2] / "sandbox_orch"


class EndsOnRelease:
    """A backend whose container ends when the test says so."""

    def __init__(self) -> None:
        self.released = asyncio.Event()

    async def wait(self, container_id: str) -> ExitStatus:
        await self.released.wait()
        return ExitStatus(0)


def test_a_node_cancelled_as_its_container_ends_is_cancelled():
    async def scenario() -> None:
        runner = object.__new__(NodeRunner)  # only its backend is used by _wait
        runner.backend = EndsOnRelease()
        waiting = asyncio.ensure_future(runner._wait("c1", 60))
        await asyncio.sleep(0)  # the runner now waits on the backend
        runner.backend.released.set()  # the container ends ...
        waiting.cancel()  # ... as the node is cancelled
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(scenario())


def test_no_module_uses_wait_for():
    used = [
        f"{path.relative_to(PACKAGE.parent)}:{number}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bwait_for\(", line) and not line.lstrip().startswith("#")
    ]
    assert used == [], "use asyncio.timeout (see this test's docstring)"
