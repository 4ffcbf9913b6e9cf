"""The scheduler: runs a plan's nodes as their needs finish, never more than N at once.

It knows nothing of containers: it is given a coroutine that runs one attempt of a node.
A node is judged once all its needs are finished: it starts, or it is skipped (with a
reason naming the need or the condition), or its condition fails to evaluate (`errored`).
A condition that is cheap by construction is judged at once; any other is judged in the
run's evaluation worker (bounded in time and memory), as a task the scheduler waits on
beside its running nodes, so a hostile condition never holds up timeouts or interrupts.

Stopping is designed in, not patched on: an interrupt (SIGINT/SIGTERM) or the
workflow's deadline is an event the scheduler waits on beside its running nodes. On
either, the running node tasks are cancelled, each removing its own container on the
way out, and every node that had not finished gets a final state.
"""

from __future__ import annotations

import asyncio
import dataclasses
import graphlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .agents.prompts import PromptError, check_launchable, launch_argv
from .agents.spending import Spending
from .agents.usage import total
from .bounded.evaluator import EvaluationUnavailable, Evaluator
from .conditions import Condition, ConditionError, NeedsState, evaluate
from .events import Emit, NodeDelayed, NodeFinished, NodeStarted
from .execution import DURING_SETUP, Attempt, AttemptCancelled
from .planning import Plan, PlannedNode
from .redaction import scrub
from .sandbox import Sandbox
from .status import NodeStatus, RunStatus
from .timing.ahead import Preparer, dependents, to_prepare
from .timing.pacing import StartPacer

log = logging.getLogger(__name__)

AGENT_FORMATS = ("claude", "codex")
AttemptFn = Callable[[PlannedNode, Sandbox, int], Awaitable[Attempt]]
DEFAULT_MAX_PARALLEL = 4  # ENGINE.md: engine throughput is flat from 4 concurrent starts


@dataclass
class NodeRecord:
    name: str
    status: NodeStatus = NodeStatus.PENDING
    attempts: list[Attempt] = field(default_factory=list)
    reason: str | None = None
    skip_reason: str | None = None
    condition_result: bool | None = None
    condition_error: bool = False  # errored by its own `when`, not by the engine

    @property
    def last(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    def view(self, outputs: bool = True, usage: bool = True) -> dict[str, Any]:
        """What a condition sees of this node (CONTRACT 5); an inline condition cannot
        name `outputs`, so it is not given them (converting them to CEL is not free), nor
        `usage` (what an agent spent, all attempts) unless it names it."""
        last = self.last
        first = self.attempts[0] if self.attempts else None
        duration = (last.finished_at - first.started_at).total_seconds() if first and last else None
        view = {
            "status": self.status.value,
            "exit_code": last.exit_code if last else None,
            "duration": duration,
            "attempts": len(self.attempts),
        }
        if outputs:
            view["outputs"] = last.outputs if last else {}
        if usage:  # zeros for a node that is no agent: a condition never meets null
            view["usage"] = total(a.usage for a in self.attempts)
        return view


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
        timeout: float | None = None,
        evaluator: Evaluator | None = None,
        spending: Spending | None = None,
        stagger: float = 0.0,
        ahead: Preparer | None = None,
        hold: int = 0,
    ) -> None:
        """`ahead` prepares the containers of up to `hold` nodes due next (timing/ahead.py)."""
        if max_parallel < 1:
            raise ValueError("max_parallel must be at least 1")
        self.plan = plan
        self.sandboxes = sandboxes
        self._attempt = attempt
        self._emit = emit
        self.max_parallel = max_parallel
        self.fail_fast = plan.workflow.fail_fast if fail_fast is None else fail_fast
        self.timeout = plan.workflow.timeout if timeout is None else timeout
        self.records = {name: NodeRecord(name) for name in plan.nodes}
        self.interrupted = False
        self.expired = False
        self._halted_by: str | None = None  # the failure that stopped new starts
        # Without one given (tests, benchmarks), its own, started only if a condition
        # needs it, and closed at the end of run().
        self._evaluator = evaluator or Evaluator()
        self._owns_evaluator = evaluator is None
        self.spending = spending  # agents' usage and the budgets it is held to
        self._pacer = StartPacer(stagger) if stagger else None  # `run --stagger`: agents only
        self._ahead = ahead if hold > 0 else None
        self._hold = hold
        self._held: set[str] = set()  # prepared, not yet started or finished
        self._offered: deque[str] = deque()  # dependents of nodes that started or finished
        self._dependents = dependents(plan) if self._ahead is not None else {}

    async def run(self, interrupt: asyncio.Event) -> dict[str, NodeRecord]:
        graph = {name: [e.source for e in node.needs] for name, node in self.plan.nodes.items()}
        sorter = graphlib.TopologicalSorter(graph)
        sorter.prepare()
        waiting: deque[str] = deque()
        running: dict[asyncio.Task[None], str] = {}
        judging: dict[asyncio.Task[bool], str] = {}  # conditions in the evaluation worker
        stop = asyncio.ensure_future(interrupt.wait())
        expired = asyncio.Event()
        timer = (
            asyncio.get_running_loop().call_later(self.timeout, expired.set)
            if self.timeout
            else None
        )
        deadline = asyncio.ensure_future(expired.wait())
        try:
            while True:
                self._fill(sorter, waiting, running, judging)
                if not running and not judging:
                    break
                done, _ = await asyncio.wait(
                    [*running, *judging, stop, deadline], return_when=asyncio.FIRST_COMPLETED
                )
                if stop in done or deadline in done:
                    self.interrupted = stop in done
                    self.expired = not self.interrupted
                    await _cancel_all(judging)  # not started: finished below as such
                    await self._cancel(running)
                    break
                for task in done:
                    if task in judging:
                        name = judging.pop(task)  # type: ignore[arg-type]
                        if task.result():
                            waiting.append(name)
                        else:
                            sorter.done(name)
                        continue
                    name = running.pop(task)  # type: ignore[arg-type]
                    self._settle(name)
                    self._offer(name)  # an input's producer finished
                    sorter.done(name)
        finally:
            stop.cancel()
            deadline.cancel()
            if timer is not None:
                timer.cancel()
            await _cancel_all(judging)
            if self._owns_evaluator:
                await self._evaluator.close()
        self._finish_unfinished()
        return self.records

    def _fill(
        self,
        sorter: graphlib.TopologicalSorter[str],
        waiting: deque[str],
        running: dict[asyncio.Task[None], str],
        judging: dict[asyncio.Task[bool], str],
    ) -> None:
        """Judge every node whose needs are finished; start as many as the cap allows."""
        progress = True
        while progress:  # a node finished here (skipped) may make others ready
            progress = False
            for name in sorter.get_ready():
                progress = True
                verdict = self._judge(name)
                if verdict is None:
                    judging[asyncio.create_task(self._judge_bounded(name))] = name
                elif verdict:
                    waiting.append(name)
                else:
                    sorter.done(name)
            # fail_fast may have halted the run since these were queued: only handlers
            # (failure()/always()) may still start. Checked once, not per queued node.
            if self._halted_by is not None and waiting:
                keep = deque(n for n in waiting if self._handles_failure(n))
                for name in waiting:
                    if name not in keep:
                        progress = True
                        self._skip(name, self._halt_reason())
                        sorter.done(name)
                waiting.clear()
                waiting.extend(keep)
        while waiting and len(running) < self.max_parallel:
            name = waiting.popleft()
            self._held.discard(name)  # its attempt takes the prepared container
            self.records[name].status = NodeStatus.RUNNING  # its dependents are due next
            running[asyncio.create_task(self._run_node(name), name=name)] = name
            self._offer(name)
        self._prepare_ahead()

    def _offer(self, name: str) -> None:
        if self._ahead is not None:
            self._offered.extend(self._dependents[name])

    def _prepare_ahead(self) -> None:
        """Prepare the containers of nodes due soon, up to `hold` at a time; none once
        the run is halted or interrupted."""
        if self._ahead is None or self._halted_by is not None or self.interrupted:
            return
        while chosen := to_prepare(
            self._offered, self.plan, self._status, self._held, self._hold - len(self._held)
        ):
            for name in chosen:
                self._held.add(name)
                self._ahead.prepare(self.plan.nodes[name], self.sandboxes[name])
                self._offer(name)  # its dependents may be held next, if there is room

    def _status(self, name: str) -> NodeStatus:
        return self.records[name].status

    def _judge(self, name: str) -> bool | None:
        """Start it (True), or give it its final state here (False), or None: its
        condition must be judged in the evaluation worker (`_judge_bounded`)."""
        node = self.plan.nodes[name]
        condition = node.condition
        blocking = self._blocking_need(node)
        implicit_success = condition is None or not condition.status_aware
        if implicit_success and blocking is not None:
            # No status function: every need must have succeeded (or be allowed to
            # fail), i.e. `success() && (when)`; the need is the clearer reason.
            return self._skip(name, blocking)
        if self._halted_by is not None and not self._handles_failure(name):
            return self._skip(name, self._halt_reason())
        if condition is None:
            return True
        if not condition.inline:
            return None
        state = self._state(node, blocking)
        try:
            result = evaluate(condition, self._context(node, condition), state)
        except ConditionError as error:
            return self._condition_failed(name, error)
        return self._decide(name, result)

    async def _judge_bounded(self, name: str) -> bool:
        """`_judge` for a condition that may be costly: in the evaluation worker."""
        node = self.plan.nodes[name]
        condition = node.condition
        assert condition is not None
        try:
            state = self._state(node, self._blocking_need(node))
            result = await self._evaluator.condition(
                condition, self._context(node, condition), state
            )
        except ConditionError as error:
            return self._condition_failed(name, error)
        except Exception as error:  # a bug here must not end the run uncleaned
            log.exception("condition of %s", name)
            return self._finish(name, NodeStatus.ERRORED, f"internal error: {error}")
        return self._decide(name, result)

    def _state(self, node: PlannedNode, blocking: str | None) -> NeedsState:
        return NeedsState(
            success=blocking is None,
            failure=any(self.records[e.source].status.unsuccessful for e in node.needs),
            cancelled=self.interrupted,
        )

    def _context(self, node: PlannedNode, condition: Condition) -> dict[str, dict[str, Any]]:
        # Only what the expression names is converted (CEL values cost ~30 us a node);
        # all visible nodes only when it iterates over `nodes` itself.
        seen = node.visible if condition.whole_nodes else condition.references
        inline = condition.inline
        spend = not inline or "usage" in condition.source
        return {a: self.records[a].view(outputs=not inline, usage=spend) for a in seen}

    def _decide(self, name: str, result: bool) -> bool:
        self.records[name].condition_result = result
        if not result:
            return self._skip(name, f"condition is false: {self.plan.nodes[name].when}")
        return True

    def _condition_failed(self, name: str, error: ConditionError) -> bool:
        self.records[name].condition_error = True
        return self._finish(name, NodeStatus.ERRORED, f"condition error: {error}")

    def _blocking_need(self, node: PlannedNode) -> str | None:
        for edge in node.needs:
            need = self.records[edge.source]
            if need.status == NodeStatus.SUCCEEDED:
                continue
            tolerated = edge.allow_failure or self.plan.nodes[edge.source].continue_on_failure
            if need.status.unsuccessful and tolerated:
                continue
            return f"need {edge.source!r} {_as_reason(need.status)}"
        return None

    def _handles_failure(self, name: str) -> bool:
        condition = self.plan.nodes[name].condition
        return condition is not None and condition.handles_failure

    def _halt_reason(self) -> str:
        return f"not started: fail_fast after {self._halted_by!r} failed"

    def _skip(self, name: str, reason: str) -> bool:
        self.records[name].skip_reason = reason
        return self._finish(name, NodeStatus.SKIPPED, reason)

    def _finish(self, name: str, status: NodeStatus, reason: str) -> bool:
        record = self.records[name]
        record.status, record.reason = status, reason
        if self._ahead is not None:  # skipped, errored or cancelled unstarted: never run
            self._held.discard(name)
            self._ahead.discard(name)
        self._emit(NodeFinished(name, status, None, reason, len(record.attempts), None, _now()))
        self._settle(name)
        return False

    def _settle(self, name: str) -> None:
        """A node's failure halts the run under fail_fast, unless it may fail."""
        failed = self.records[name].status.unsuccessful
        if failed and self.fail_fast and not self.plan.nodes[name].continue_on_failure:
            self._halted_by = self._halted_by or name

    async def _run_node(self, name: str) -> None:
        record = self.records[name]
        node, sandbox = self.plan.nodes[name], self.sandboxes[name]
        try:
            delay = node.request.start_delay
            if delay and not await self._wait_to_start(node, delay, "start_delay"):
                return
            if node.prompt is not None:
                node = await self._prompted(node, sandbox)
            # Its --stagger turn comes last, right before its attempt: a prompt's evaluation
            # (a worker's round trip) must not eat into the spacing of agent starts.
            if self._pacer is not None and node.runtime.agent:
                turn = self._pacer.reserve(asyncio.get_running_loop().time())
                if turn > 0 and not await self._wait_to_start(node, turn, "stagger"):
                    return
            spent = self._budget_refusal(node)
            if spent is not None:  # judged at its start: spend moves while it waits
                self._skip(name, spent)
                return
            await self._attempts(node, sandbox, record)
        except (PromptError, EvaluationUnavailable) as error:  # before any attempt
            ours = isinstance(error, EvaluationUnavailable)  # the worker's fault: errored
            record.status = NodeStatus.ERRORED if ours else NodeStatus.FAILED
            record.reason = str(error) if ours else f"prompt {error}"
            self._emit(NodeFinished(name, record.status, None, record.reason, 0, None, _now()))
        except asyncio.CancelledError:
            raise  # _cancel() gives the final state, knowing why
        except Exception as error:  # a bug here must not end the run uncleaned
            log.exception("node %s", name)
            record.status, record.reason = NodeStatus.ERRORED, f"internal error: {error}"
            self._emit(NodeFinished(name, record.status, None, record.reason, 0, None, _now()))

    async def _prompted(self, node: PlannedNode, sandbox: Sandbox) -> PlannedNode:
        """The node with its prompt rendered from its needs' results (in the evaluation
        worker: this task waits, the loop does not). Redacted before it goes anywhere: a
        need's output may hold a secret this node was never granted."""
        assert node.prompt is not None
        views = {a: self.records[a].view() for a in node.prompt.reads(node.visible)}
        text = await self._evaluator.prompt(node.prompt, views, sandbox.prompt_limit)
        text = scrub(text)
        check_launchable(text, sandbox.prompt_limit)  # a marker may be longer than a value
        return dataclasses.replace(node, argv=launch_argv(node.argv, node.prompt, text))

    async def _wait_to_start(self, node: PlannedNode, seconds: float, reason: str) -> bool:
        """Its `start_delay`, or (agents) its `--stagger` turn: awaited in the node's own
        task, so a cancel (Ctrl-C, the workflow's deadline) ends it at once, before
        anything was created, and nothing else waits for it. The node holds its
        --max-parallel slot meanwhile. False: fail_fast halted the run during the wait,
        so the node is skipped, as one not yet started would be."""
        self._emit(NodeDelayed(node.name, seconds, reason, _now()))
        await asyncio.sleep(seconds)
        if self._halted_by is not None and not self._handles_failure(node.name):
            self._skip(node.name, self._halt_reason())
            return False
        return True

    async def _attempts(self, node: PlannedNode, sandbox: Sandbox, record: NodeRecord) -> None:
        retries = node.retries
        limit = retries.limit if retries else 0
        for number in range(1, limit + 2):
            self._emit(NodeStarted(node.name, number, _now()))
            try:
                attempt = await self._attempt(node, sandbox, number)
            except AttemptCancelled as cancelled:
                record.attempts.append(cancelled.attempt)
                self._settle_usage(node, cancelled.attempt)
                raise
            record.attempts.append(attempt)
            self._settle_usage(node, attempt)
            retry = (
                retries is not None
                and attempt.status != NodeStatus.SUCCEEDED
                and number <= limit
                and attempt.retry_reason in retries.on
                and self._budget_refusal(node) is None  # a spent budget is not retried
            )
            record.status, record.reason = attempt.status, attempt.reason
            self._emit(
                NodeFinished(
                    node.name, attempt.status, attempt.exit_code, attempt.reason, number,
                    attempt.duration_s, _now(), retrying=retry, usage=attempt.usage,
                    answer=_answer(node, attempt),
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

    def _budget_refusal(self, node: PlannedNode) -> str | None:
        if self.spending is None or not is_agent(node):
            return None
        return self.spending.refusal(node.name)

    def _settle_usage(self, node: PlannedNode, attempt: Attempt) -> None:
        if self.spending is not None and is_agent(node):
            self.spending.settle(node.name, attempt.usage)

    async def _cancel(self, running: dict[asyncio.Task[None], str]) -> None:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        if self.interrupted:
            status, reason = NodeStatus.CANCELLED, "run interrupted"
        else:
            status, reason = NodeStatus.TIMED_OUT, f"workflow timeout after {self.timeout:g}s"
        for name in running.values():
            last, why = self.records[name].last, reason
            if last is not None and last.status == NodeStatus.CANCELLED:
                if (last.reason or "").endswith(DURING_SETUP):
                    why = f"{reason}{DURING_SETUP}"
                last.status, last.reason = status, why
            self._finish(name, status, why)
        running.clear()

    def _finish_unfinished(self) -> None:
        for record in self.records.values():
            if record.status.finished:
                continue
            if self.interrupted:
                self._finish(record.name, NodeStatus.CANCELLED, "run interrupted")
            else:
                self._skip(record.name, f"not started: workflow timeout after {self.timeout:g}s")

    def run_status(self) -> RunStatus:
        if self.interrupted:
            return RunStatus.CANCELLED
        required = [
            r for r in self.records.values() if not self.plan.nodes[r.name].continue_on_failure
        ]
        if any(r.status == NodeStatus.ERRORED and not r.condition_error for r in required):
            return RunStatus.ERRORED
        if any(r.status.unsuccessful for r in required) or self.expired:
            return RunStatus.FAILED
        return RunStatus.SUCCEEDED


async def _cancel_all(tasks: dict[asyncio.Task[bool], str]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    tasks.clear()


def _as_reason(status: NodeStatus) -> str:
    return {
        NodeStatus.FAILED: "failed",
        NodeStatus.TIMED_OUT: "timed out",
        NodeStatus.ERRORED: "errored",
        NodeStatus.SKIPPED: "was skipped",
        NodeStatus.CANCELLED: "was cancelled",
    }.get(status, status.value)


def is_agent(node: PlannedNode) -> bool:
    """A node whose stream is an agent's: its usage counts against budgets."""
    return node.parse.format in AGENT_FORMATS


def _answer(node: PlannedNode, attempt: Attempt) -> str | None:
    answer = attempt.outputs.get("result") if is_agent(node) else None
    return answer if isinstance(answer, str) and answer else None


def _now() -> datetime:
    return datetime.now(UTC)
