"""Node `start_delay` and `run --stagger` in the scheduler: the delay comes once a node is
due and before its container exists; it is an await in the node's own task, so other
nodes' timeouts and the scheduler go on, and an interrupt (or fail_fast) during it ends
the node with nothing created. On the in-memory backend; agent starts with a recording
attempt function (an agent container needs a secret store and an egress proxy)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from sandbox_orch.backend.memory import MemoryBackend, Outcome
from sandbox_orch.events import NodeDelayed, NodeFinished, NodeStarted
from sandbox_orch.execution import NODE_LABEL, Attempt, NodeRunner
from sandbox_orch.scheduler import Scheduler
from sandbox_orch.status import NodeStatus

from .helpers import admitted, plan_of


def run(text, outcomes=None, *, interrupt_on_start=None, **options):
    """Run on the memory backend; `interrupt_on_start`: set the stop event as soon as
    that node's container starts. Returns records, backend, events, seconds taken."""
    plan, sandboxes = admitted(text)
    outcomes = outcomes or {}
    backend = MemoryBackend(lambda spec: outcomes.get(spec.labels[NODE_LABEL], Outcome()))
    runner = NodeRunner(backend, "test-run", "owner")
    events = []
    scheduler = Scheduler(plan, sandboxes, runner.attempt, events.append, **options)
    create = backend.create

    async def recording_create(spec):
        backend.log.append(("create", spec.labels[NODE_LABEL]))
        return await create(spec)

    backend.create = recording_create

    async def go():
        stop = asyncio.Event()
        if interrupt_on_start is not None:
            start = backend.start

            async def start_then_interrupt(container_id, sink):
                await start(container_id, sink)
                if backend.containers[container_id].spec.labels[NODE_LABEL] == interrupt_on_start:
                    stop.set()

            backend.start = start_then_interrupt
        began = time.monotonic()
        records = await scheduler.run(stop)
        took = time.monotonic() - began
        await runner.close()
        return records, took

    records, took = asyncio.run(go())
    return scheduler, records, backend, events, took


def created(backend):
    return [name for event, name in backend.log if event == "create"]


def when(events, kind, node):
    return next(e.at for e in events if isinstance(e, kind) and e.node == node)


def test_a_start_delay_waits_once_due_then_starts():
    text = """
    version: 1
    name: x
    nodes:
      first: {command: [x]}
      later: {needs: [first], command: [x], start_delay: 300ms}
    """
    _, records, backend, events, _ = run(text)
    assert records["later"].status == NodeStatus.SUCCEEDED
    delayed = [e for e in events if isinstance(e, NodeDelayed)]
    assert [(e.node, e.delay_s, e.reason) for e in delayed] == [("later", 0.3, "start_delay")]
    # Due when `first` finished; its container started no sooner than 300ms after that.
    due = when(events, NodeFinished, "first")
    assert delayed[0].at >= due
    assert (when(events, NodeStarted, "later") - delayed[0].at).total_seconds() >= 0.3
    assert created(backend) == ["first", "later"]


def test_a_delaying_node_does_not_hold_up_another_nodes_timeout():
    text = """
    version: 1
    name: x
    nodes:
      patient: {command: [x], start_delay: 2s}
      hang: {command: [x], timeout: 100ms}
    """
    _, records, _, events, took = run(text, {"hang": Outcome(hang=True)}, fail_fast=False)
    assert records["hang"].status == NodeStatus.TIMED_OUT
    assert records["patient"].status == NodeStatus.SUCCEEDED
    # `hang` timed out while `patient` was still waiting: its end came first.
    assert when(events, NodeFinished, "hang") < when(events, NodeStarted, "patient")
    assert took >= 2


def test_an_interrupt_during_a_delay_cancels_the_node_with_nothing_created():
    text = """
    version: 1
    name: x
    nodes:
      waiting: {command: [x], start_delay: 1h}
      busy: {command: [x]}
      after: {needs: [waiting], command: [x]}
    """
    scheduler, records, backend, _, took = run(
        text, {"busy": Outcome(hang=True)}, interrupt_on_start="busy"
    )
    assert took < 10, "the interrupt did not end the delay"
    assert records["waiting"].status == NodeStatus.CANCELLED
    assert records["waiting"].reason == "run interrupted"
    assert records["waiting"].attempts == []
    assert records["after"].status == NodeStatus.CANCELLED
    assert "waiting" not in created(backend) and "after" not in created(backend)
    assert backend.containers == {}
    assert scheduler.run_status().value == "cancelled"


def test_the_workflow_deadline_during_a_delay_ends_the_node_at_once():
    text = """
    version: 1
    name: x
    timeout: 200ms
    nodes:
      waiting: {command: [x], start_delay: 1h}
    """
    _, records, backend, _, took = run(text)
    assert took < 10
    assert records["waiting"].status == NodeStatus.TIMED_OUT
    assert created(backend) == []


def test_fail_fast_during_a_delay_skips_the_node_instead_of_starting_it():
    text = """
    version: 1
    name: x
    nodes:
      bad: {command: [x]}
      waiting: {command: [x], start_delay: 300ms}
    """
    _, records, backend, _, _ = run(text, {"bad": Outcome(exit_code=1)})
    assert records["bad"].status == NodeStatus.FAILED
    assert records["waiting"].status == NodeStatus.SKIPPED
    assert records["waiting"].skip_reason == "not started: fail_fast after 'bad' failed"
    assert created(backend) == ["bad"]


def test_keep_going_starts_the_delayed_node_after_a_failure():
    text = """
    version: 1
    name: x
    nodes:
      bad: {command: [x]}
      waiting: {command: [x], start_delay: 200ms}
    """
    _, records, _, _, _ = run(text, {"bad": Outcome(exit_code=1)}, fail_fast=False)
    assert records["waiting"].status == NodeStatus.SUCCEEDED


def test_a_delaying_node_holds_its_parallel_slot():
    text = """
    version: 1
    name: x
    nodes:
      a-waiting: {command: [x], start_delay: 300ms}
      b-other: {command: [x]}
    """
    _, records, backend, events, _ = run(text, max_parallel=1)
    assert all(r.status == NodeStatus.SUCCEEDED for r in records.values())
    # One slot, taken by `a-waiting` (queued first) for its delay and its run: `b-other`
    # starts only once it finished.
    assert created(backend) == ["a-waiting", "b-other"]
    assert when(events, NodeStarted, "b-other") >= when(events, NodeFinished, "a-waiting")


def test_stagger_does_not_delay_nodes_that_are_not_agents():
    text = """
    version: 1
    name: x
    nodes:
      a: {command: [x]}
      b: {command: [x]}
      c: {command: [x]}
    """
    _, records, _, events, took = run(text, stagger=30.0)
    assert all(r.status == NodeStatus.SUCCEEDED for r in records.values())
    assert not [e for e in events if isinstance(e, NodeDelayed)]
    assert took < 10


# --- agents, with a recording attempt function -------------------------------------------

AGENTS = """
version: 1
name: x
nodes:
  a1: {runtime: claude, prompt: one}
  a2: {runtime: claude, prompt: two}
  a3: {runtime: claude, prompt: three}
  tool: {command: [x]}
"""


def run_agents(text, stagger, *, hang=(), interrupt_after=None):
    """Each attempt records its start (loop time) and succeeds, or hangs until cancelled.
    `interrupt_after`: the stop event is set once that many attempts started."""
    plan = plan_of(text)
    sandboxes = dict.fromkeys(plan.nodes)
    starts: dict[str, float] = {}
    stop = asyncio.Event()

    async def attempt(node, _sandbox, number):
        starts[node.name] = asyncio.get_running_loop().time()
        if interrupt_after is not None and len(starts) >= interrupt_after:
            stop.set()
        if node.name in hang:
            await asyncio.Event().wait()
        now = datetime.now(UTC)
        return Attempt(number, NodeStatus.SUCCEEDED, now, now, 0.0, exit_code=0)

    events = []
    scheduler = Scheduler(plan, sandboxes, attempt, events.append, stagger=stagger)

    async def go():
        began = asyncio.get_running_loop().time()
        records = await scheduler.run(stop)
        return records, {k: v - began for k, v in starts.items()}

    records, offsets = asyncio.run(go())
    return records, offsets, events


def test_stagger_spaces_consecutive_agent_starts():
    records, offsets, events = run_agents(AGENTS, 0.2)
    assert all(r.status == NodeStatus.SUCCEEDED for r in records.values())
    agent_starts = sorted(offsets[n] for n in ("a1", "a2", "a3"))
    assert agent_starts[1] - agent_starts[0] >= 0.2 - 0.01  # loop time granularity
    assert agent_starts[2] - agent_starts[1] >= 0.2 - 0.01
    assert agent_starts[2] - agent_starts[0] >= 0.4 - 0.01  # the k-th: k * stagger
    # The shell node is not an agent: it started at once.
    assert offsets["tool"] < 0.2
    staggered = sorted((e.node, e.reason) for e in events if isinstance(e, NodeDelayed))
    assert [reason for _, reason in staggered] == ["stagger", "stagger"]


def test_start_delay_and_stagger_add_up_in_order():
    text = """
    version: 1
    name: x
    nodes:
      early: {runtime: claude, prompt: one}
      late: {runtime: claude, prompt: two, start_delay: 300ms}
    """
    _, offsets, events = run_agents(text, 0.2)
    # `late` waits its own 300ms first; by then `early` started long enough ago.
    assert offsets["late"] - offsets["early"] >= 0.3 - 0.01
    assert [(e.node, e.reason) for e in events if isinstance(e, NodeDelayed)] == [
        ("late", "start_delay")
    ]


def test_an_interrupt_during_a_stagger_wait_cancels_the_waiting_agents():
    records, offsets, _ = run_agents(AGENTS, 3600.0, hang=("a1", "tool"), interrupt_after=2)
    started = set(offsets)
    assert started == {"a1", "tool"}  # a2 and a3 were waiting their turn
    for name in ("a2", "a3"):
        assert records[name].status == NodeStatus.CANCELLED
        assert records[name].attempts == []


def test_no_stagger_starts_agents_together():
    _, offsets, events = run_agents(AGENTS, 0.0)
    assert not [e for e in events if isinstance(e, NodeDelayed)]
    assert max(offsets.values()) < 0.2
