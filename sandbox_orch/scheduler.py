"""The scheduler: runs a plan's nodes as their needs finish, never more than N at once.

It knows nothing of containers: it is given a coroutine that runs one attempt of a node.
An interrupt (SIGINT/SIGTERM, or the workflow's deadline) is an event it waits on beside
its running nodes; on it, the running node tasks are cancelled (each removes its own
container on the way out) and everything unfinished becomes `cancelled`.
"""

from __future__ import annotations

import asyncio
import graphlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .events import Emit, NodeFinished, NodeStarted
from .execution import Attempt
from .planning import Plan, PlannedNode
from .sandbox import Sandbox
from .status import NodeStatus, RunStatus

log = logging.getLogger(__name__)

AttemptFn = Callable[[PlannedNode, Sandbox, int], Awaitable[Attempt]]
DEFAULT_MAX_PARALLEL = 4  # ENGINE.md: engine throughput is flat from 4 concurrent starts


@dataclass
class NodeRecord:
    name: str
    status: NodeStatus = NodeStatus.PENDING
    attempts: list[Attempt] = field(default_factory=list)
    reason: str | None = None
    skip_reason: str | None = None

    @property
    def last(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None


class Scheduler:
    def __init__(
        self,
        plan: Plan,
        sandboxes: dict[str, Sandbox],
        attempt: AttemptFn,
        emit: Emit,
        *,
        max_parallel: int = DEFAULT_MAX_PARALLEL,
        fail_fast: bool | None = None,
    ) -> None:
        if max_parallel < 1:
            raise ValueError("max_parallel must be at least 1")
        self.plan = plan
        self.sandboxes = sandboxes
        self._attempt = attempt
        self._emit = emit
        self.max_parallel = max_parallel
        self.fail_fast = plan.workflow.fail_fast if fail_fast is None else fail_fast
        self.records = {name: NodeRecord(name) for name in plan.nodes}
        self.interrupted = False
        self._halted_by: str | None = None  # the failure that stopped new starts

    async def run(self, interrupt: asyncio.Event) -> dict[str, NodeRecord]:
        graph = {name: [e.source for e in node.needs] for name, node in self.plan.nodes.items()}
        sorter = graphlib.TopologicalSorter(graph)
        sorter.prepare()
        waiting: deque[str] = deque()
        running: dict[asyncio.Task[None], str] = {}
        stop = asyncio.ensure_future(interrupt.wait())
        try:
            while True:
                self._fill(sorter, waiting, running)
                if not running:
                    break
                done, _ = await asyncio.wait([*running, stop], return_when=asyncio.FIRST_COMPLETED)
                if stop in done:
                    self.interrupted = True
                    await self._cancel(running)
                    break
                for task in done:
                    name = running.pop(task)  # type: ignore[arg-type]
                    self._settle(name)
                    sorter.done(name)
        finally:
            stop.cancel()
        self._cancel_unfinished()
        return self.records

    def _fill(
        self,
        sorter: graphlib.TopologicalSorter[str],
        waiting: deque[str],
        running: dict[asyncio.Task[None], str],
    ) -> None:
        """Judge every node whose needs are finished; start as many as the cap allows."""
        while True:
            ready = sorter.get_ready()
            if not ready:
                break
            for name in ready:
                reason = self._skip_reason(name)
                if reason is None:
                    waiting.append(name)
                else:
                    self._skip(name, reason)
                    sorter.done(name)
        # fail_fast may have triggered after these were queued: they must not start.
        if self._halted_by is not None and waiting:
            for name in waiting:
                self._skip(name, self._halt_reason())
                sorter.done(name)
            waiting.clear()
            self._fill(sorter, waiting, running)
            return
        while waiting and len(running) < self.max_parallel:
            name = waiting.popleft()
            running[asyncio.create_task(self._run_node(name), name=name)] = name

    def _skip_reason(self, name: str) -> str | None:
        for edge in self.plan.nodes[name].needs:
            need = self.records[edge.source]
            if need.status == NodeStatus.SUCCEEDED:
                continue
            tolerated = edge.allow_failure or self.plan.nodes[edge.source].continue_on_failure
            if need.status.unsuccessful and tolerated:
                continue
            return f"need {edge.source!r} {_as_reason(need.status)}"
        if self._halted_by is not None:
            return self._halt_reason()
        return None

    def _halt_reason(self) -> str:
        return f"not started: fail_fast after {self._halted_by!r} failed"

    def _skip(self, name: str, reason: str) -> None:
        record = self.records[name]
        record.status, record.skip_reason, record.reason = NodeStatus.SKIPPED, reason, reason
        self._emit(NodeFinished(name, record.status, None, reason, 0, None, _now()))

    def _settle(self, name: str) -> None:
        record = self.records[name]
        failed = record.status.unsuccessful
        if failed and self.fail_fast and not self.plan.nodes[name].continue_on_failure:
            self._halted_by = self._halted_by or name

    async def _run_node(self, name: str) -> None:
        record = self.records[name]
        node, sandbox = self.plan.nodes[name], self.sandboxes[name]
        record.status = NodeStatus.RUNNING
        try:
            await self._attempts(node, sandbox, record)
        except asyncio.CancelledError:
            record.status, record.reason = NodeStatus.CANCELLED, "run interrupted"
            raise
        except Exception as error:  # a bug here must not end the run uncleaned
            log.exception("node %s", name)
            record.status, record.reason = NodeStatus.ERRORED, f"internal error: {error}"
            self._emit(NodeFinished(name, record.status, None, record.reason, 0, None, _now()))

    async def _attempts(self, node: PlannedNode, sandbox: Sandbox, record: NodeRecord) -> None:
        retries = node.retries
        limit = retries.limit if retries else 0
        for number in range(1, limit + 2):
            self._emit(NodeStarted(node.name, number, _now()))
            attempt = await self._attempt(node, sandbox, number)
            record.attempts.append(attempt)
            retry = (
                retries is not None
                and attempt.status != NodeStatus.SUCCEEDED
                and number <= limit
                and attempt.retry_reason in retries.on
            )
            record.status, record.reason = attempt.status, attempt.reason
            self._emit(
                NodeFinished(
                    node.name, attempt.status, attempt.exit_code, attempt.reason, number,
                    attempt.duration_s, _now(), retrying=retry,
                )
            )  # fmt: skip
            if not retry:
                return
            assert retries is not None
            if attempt.oom_killed and retries.memory_factor > 1:
                sandbox = sandbox.with_memory(int(sandbox.memory * retries.memory_factor))
            if retries.backoff:
                # Exponential: backoff, 2*backoff, 4*backoff, ...
                await asyncio.sleep(retries.backoff * 2 ** (number - 1))

    async def _cancel(self, running: dict[asyncio.Task[None], str]) -> None:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        for name in running.values():
            record = self.records[name]
            record.status, record.reason = NodeStatus.CANCELLED, "run interrupted"
            self._emit(NodeFinished(name, record.status, None, record.reason, 0, None, _now()))
        running.clear()

    def _cancel_unfinished(self) -> None:
        for record in self.records.values():
            if not record.status.finished:
                record.status, record.reason = NodeStatus.CANCELLED, "run interrupted"
                self._emit(
                    NodeFinished(record.name, record.status, None, record.reason, 0, None, _now())
                )

    def run_status(self) -> RunStatus:
        if self.interrupted:
            return RunStatus.CANCELLED
        required = [
            r for r in self.records.values() if not self.plan.nodes[r.name].continue_on_failure
        ]
        if any(r.status == NodeStatus.ERRORED for r in required):
            return RunStatus.ERRORED
        if any(r.status.unsuccessful for r in required):
            return RunStatus.FAILED
        return RunStatus.SUCCEEDED


def _as_reason(status: NodeStatus) -> str:
    return {
        NodeStatus.FAILED: "failed",
        NodeStatus.TIMED_OUT: "timed out",
        NodeStatus.ERRORED: "errored",
        NodeStatus.SKIPPED: "was skipped",
        NodeStatus.CANCELLED: "was cancelled",
    }.get(status, status.value)


def _now() -> datetime:
    return datetime.now(UTC)
