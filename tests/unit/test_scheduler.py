"""The scheduler on the in-memory backend: order, skips, fail_fast, parallelism, retries,
timeouts and interrupts, plus properties over random DAGs (hypothesis)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox_orch.backend.memory import MemoryBackend, Outcome
from sandbox_orch.bounded.evaluator import Evaluator
from sandbox_orch.events import NodeFinished, NodeStarted
from sandbox_orch.execution import NODE_LABEL, NodeRunner
from sandbox_orch.scheduler import Scheduler
from sandbox_orch.status import NodeStatus, RunStatus

from .helpers import admitted, run_on_memory


def run(
    text: str,
    outcomes=None,
    *,
    max_parallel=4,
    fail_fast=None,
    interrupt_when=None,
    evaluator=None,
):
    """Run a workflow on the memory backend; `outcomes` maps node name -> Outcome."""
    outcomes = outcomes or {}
    return run_on_memory(
        *admitted(text),
        lambda spec: outcomes.get(spec.labels[NODE_LABEL], Outcome()),
        max_parallel=max_parallel,
        fail_fast=fail_fast,
        evaluator=evaluator,
        interrupt_when=interrupt_when,
    )


def status(records):
    return {name: r.status.value for name, r in records.items()}


CHAIN = """
version: 1
name: x
nodes:
  a: {command: [x]}
  b: {needs: [a], command: [x]}
  c: {needs: [b], command: [x]}
  side: {command: [x]}
"""


def test_all_succeed_in_dependency_order():
    scheduler, records, backend, _ = run(CHAIN)
    assert status(records) == dict.fromkeys(["a", "b", "c", "side"], "succeeded")
    starts = [n for e, n in backend.log if e == "start"]
    exits = [n for e, n in backend.log if e == "exit"]
    assert backend.log.index(("exit", "a")) < backend.log.index(("start", "b"))
    assert backend.log.index(("exit", "b")) < backend.log.index(("start", "c"))
    assert sorted(starts) == sorted(exits) == ["a", "b", "c", "side"]
    assert scheduler.run_status() == RunStatus.SUCCEEDED
    assert backend.containers == {}  # every container removed


def test_failure_skips_dependents_with_reason_and_fails_the_run():
    scheduler, records, _, _ = run(CHAIN, {"a": Outcome(exit_code=2)}, fail_fast=False)
    assert status(records) == {"a": "failed", "b": "skipped", "c": "skipped", "side": "succeeded"}
    assert records["b"].skip_reason == "need 'a' failed"
    assert records["c"].skip_reason == "need 'b' was skipped"
    assert records["a"].last.exit_code == 2
    assert scheduler.run_status() == RunStatus.FAILED


def test_fail_fast_starts_nothing_new_after_a_failure():
    text = """
    version: 1
    name: x
    nodes:
      bad: {command: [x]}
      later: {needs: [bad2], command: [x]}
      bad2: {needs: [bad], command: [x], continue_on_failure: true}
      independent: {needs: [slow], command: [x]}
      slow: {command: [x]}
    """
    _, records, _, _ = run(text, {"bad": Outcome(exit_code=1)}, max_parallel=1)
    assert records["bad"].status == NodeStatus.FAILED
    # with one slot, 'slow' had not started when 'bad' failed: fail_fast skips it
    assert records["slow"].status == NodeStatus.SKIPPED
    assert records["slow"].skip_reason == "not started: fail_fast after 'bad' failed"


def test_keep_going_runs_independent_work():
    text = "version: 1\nname: x\nnodes:\n  bad: {command: [x]}\n  other: {command: [x]}\n"
    _, records, _, _ = run(text, {"bad": Outcome(exit_code=1)}, max_parallel=1, fail_fast=False)
    assert records["other"].status == NodeStatus.SUCCEEDED


def test_continue_on_failure_and_allow_failure_let_dependents_run():
    text = """
    version: 1
    name: x
    nodes:
      flaky: {command: [x], continue_on_failure: true}
      strict: {command: [x]}
      after_flaky: {needs: [flaky], command: [x]}
      after_strict: {needs: [{node: strict, allow_failure: true}], command: [x]}
    """
    outcomes = {"flaky": Outcome(exit_code=1), "strict": Outcome(exit_code=1)}
    scheduler, records, _, _ = run(text, outcomes, fail_fast=False)
    assert records["after_flaky"].status == NodeStatus.SUCCEEDED
    assert records["after_strict"].status == NodeStatus.SUCCEEDED
    assert scheduler.run_status() == RunStatus.FAILED  # 'strict' itself was required


def test_parallelism_cap_is_respected():
    nodes = "".join(f"  n{i}: {{command: [x]}}\n" for i in range(12))
    _, records, backend, _ = run(f"version: 1\nname: x\nnodes:\n{nodes}", max_parallel=3)
    assert backend.peak_running == 3
    assert all(r.status == NodeStatus.SUCCEEDED for r in records.values())


def test_timeout_kills_and_reports_timed_out():
    text = "version: 1\nname: x\nnodes:\n  hang: {command: [x], timeout: 50ms}\n  after: {needs: [hang], command: [x]}\n"
    scheduler, records, backend, _ = run(text, {"hang": Outcome(hang=True)})
    assert records["hang"].status == NodeStatus.TIMED_OUT
    assert records["hang"].reason == "killed after 0.05s"
    assert records["after"].skip_reason == "need 'hang' timed out"
    assert backend.containers == {}
    assert scheduler.run_status() == RunStatus.FAILED


def test_oom_is_failed_with_flag_and_retry_grows_memory_up_to_the_ceiling():
    text = """
    version: 1
    name: x
    nodes:
      hog:
        command: [x]
        resources: {memory: 768m}
        retries: {limit: 3, on: [oom], memory_factor: 2}
    """
    plan, sandboxes = admitted(text)
    memories = []

    def script(spec):
        memories.append(spec.memory)
        return Outcome(exit_code=137, oom_killed=True)

    backend = MemoryBackend(script)
    runner = NodeRunner(backend, "r", "o")
    scheduler = Scheduler(plan, sandboxes, runner.attempt, lambda e: None)
    records = asyncio.run(scheduler.run(asyncio.Event()))
    mib = 1024**2
    assert memories == [768 * mib, 1536 * mib, 2048 * mib, 2048 * mib]  # capped at 2g
    hog = records["hog"]
    assert hog.status == NodeStatus.FAILED and hog.last.oom_killed and len(hog.attempts) == 4
    assert [a.retry_reason for a in hog.attempts] == ["oom"] * 4


def test_retries_only_for_listed_reasons():
    text = """
    version: 1
    name: x
    nodes:
      a: {command: [x], retries: {limit: 2, on: [timed_out]}}
    """
    _, records, _, _ = run(text, {"a": Outcome(exit_code=1)})
    assert len(records["a"].attempts) == 1


def test_interrupt_cancels_running_and_pending_and_removes_containers():
    text = """
    version: 1
    name: x
    nodes:
      hang: {command: [x]}
      next: {needs: [hang], command: [x]}
    """
    scheduler, records, backend, events = run(
        text, {"hang": Outcome(hang=True)}, interrupt_when=lambda b: True
    )
    assert status(records) == {"hang": "cancelled", "next": "cancelled"}
    (attempt,) = records["hang"].attempts  # the interrupted attempt is kept
    assert attempt.status == NodeStatus.CANCELLED
    assert scheduler.run_status() == RunStatus.CANCELLED
    assert backend.containers == {} and len(backend.removed) == 1
    finished = [e.node for e in events if type(e).__name__ == "NodeFinished"]
    assert sorted(finished) == ["hang", "next"]


class LateOutput(MemoryBackend):
    """An engine whose output reader lags: what a container printed reaches the sink
    only as the container stops (as Docker's attach stream can, under load)."""

    def __init__(self, script) -> None:
        super().__init__(script)
        self.sinks: dict[str, Any] = {}

    async def start(self, container_id: str, sink: Any) -> None:
        self.sinks[container_id] = sink
        await super().start(container_id, sink)

    async def kill(self, container_id: str) -> None:
        container = self.containers.get(container_id)
        if container is not None and container.status is None:
            self.sinks[container_id].write("stdout", b"got this far\n")
        await super().kill(container_id)


def test_an_interrupted_node_keeps_the_output_still_on_its_way():
    text = """
    version: 1
    name: x
    nodes:
      hang: {command: [x]}
    """
    backend = LateOutput(lambda spec: Outcome(hang=True))
    _, records, _, _ = run_on_memory(
        *admitted(text), backend.script, interrupt_when=lambda b: True, backend=backend
    )
    (attempt,) = records["hang"].attempts
    assert attempt.status == NodeStatus.CANCELLED
    assert attempt.stdout_tail == "got this far\n"
    assert backend.containers == {}


# --- properties over random DAGs -------------------------------------------------------


@st.composite
def dags(draw):
    size = draw(st.integers(1, 14))
    names = [f"n{i}" for i in range(size)]
    needs = {
        name: draw(st.lists(st.sampled_from(names[:i]), unique=True, max_size=3)) if i else []
        for i, name in enumerate(names)
    }
    failing = draw(st.sets(st.sampled_from(names), max_size=size))
    tolerant = draw(st.sets(st.sampled_from(names), max_size=size))
    lines = ["version: 1", "name: random", "nodes:"]
    for name in names:
        extra = ", continue_on_failure: true" if name in tolerant else ""
        lines.append(f"  {name}: {{command: [x], needs: {needs[name]}{extra}}}")
    return "\n".join(lines) + "\n", needs, failing


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dag=dags(), max_parallel=st.integers(1, 4), fail_fast=st.booleans())
def test_scheduler_properties(dag, max_parallel, fail_fast):
    text, needs, failing = dag
    outcomes = {name: Outcome(exit_code=1) for name in failing}
    _, records, backend, events = run(
        text, outcomes, max_parallel=max_parallel, fail_fast=fail_fast
    )

    # each node reaches exactly one terminal state, reported exactly once
    terminal = [e for e in events if type(e).__name__ == "NodeFinished" and not e.retrying]
    assert sorted(e.node for e in terminal) == sorted(records)
    assert all(r.status.finished for r in records.values())

    # no node starts before its needs finish
    position = {entry: i for i, entry in enumerate(backend.log)}
    for name, deps in needs.items():
        if ("start", name) in position:
            for dep in deps:
                assert position[("exit", dep)] < position[("start", name)]

    # the parallelism cap is never exceeded; nothing is left behind
    assert backend.peak_running <= max_parallel
    assert backend.containers == {}

    # under fail_fast nothing new starts after a (non-tolerated) failure
    if fail_fast:
        first_failure = min(
            (position[("exit", n)] for n in failing if ("exit", n) in position
             and "continue_on_failure" not in _line_of(text, n)),
            default=None,
        )  # fmt: skip
        if first_failure is not None:
            later_starts = [e for e in backend.log[first_failure:] if e[0] == "start"]
            assert later_starts == []


def _line_of(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if line.strip().startswith(f"{name}:"))


# --- a hostile condition is judged off the event loop ---------------------------------------

HOSTILE = """
version: 1
name: hostile
fail_fast: false
nodes:
  a: {command: [x], outputs: {parse: {format: json}}}
  b:
    needs: [a]
    command: [x]
    when: "nodes.a.outputs.xs.all(x, nodes.a.outputs.xs.all(y, y >= 0))"
  c: {needs: [b], command: [x], when: always()}
  sibling: {command: [x], timeout: 500ms}
"""
# 3000 elements: 9 million CEL iterations, minutes of work; only the deadline ends it.
LIST = Outcome(stdout=json.dumps({"xs": list(range(3000))}).encode())


def test_a_hostile_condition_is_errored_while_siblings_time_out_on_time():
    evaluator = Evaluator(seconds=3)
    scheduler, records, _, events = run(
        HOSTILE, {"a": LIST, "sibling": Outcome(hang=True)}, evaluator=evaluator
    )
    assert records["b"].status == NodeStatus.ERRORED
    assert (
        records["b"].reason
        == "condition error: evaluation stopped after 3s (the limit for one evaluation)"
    )
    assert records["c"].status == NodeStatus.SUCCEEDED  # the run goes on
    assert scheduler.run_status() == RunStatus.FAILED  # the workflow's fault: exit 1, not 3
    finished = {e.node: e.at for e in events if isinstance(e, NodeFinished)}
    started = {e.node: e.at for e in events if isinstance(e, NodeStarted)}
    assert records["sibling"].status == NodeStatus.TIMED_OUT
    assert (finished["sibling"] - started["sibling"]).total_seconds() < 2.5
    assert finished["sibling"] < finished["b"]  # timed out while b was being judged
    assert (finished["b"] - finished["a"]).total_seconds() >= 3


def test_interrupt_while_a_condition_is_judged_stops_at_once():
    plan, sandboxes = admitted(HOSTILE)
    backend = MemoryBackend(lambda spec: {"a": LIST}.get(spec.labels[NODE_LABEL], Outcome()))
    evaluator = Evaluator(seconds=120)
    runner = NodeRunner(backend, "test-run", "owner", evaluator=evaluator)
    scheduler = Scheduler(plan, sandboxes, runner.attempt, lambda e: None, evaluator=evaluator)

    async def go():
        stop = asyncio.Event()
        task = asyncio.create_task(scheduler.run(stop))
        # bounded polling of a real condition: a finished, its output parsed, b being judged
        deadline = time.monotonic() + 60
        while not (scheduler.records["a"].status.finished and evaluator.pid):
            assert time.monotonic() < deadline, "b was never judged"
            await asyncio.sleep(0.01)
        pid = evaluator.pid
        stop.set()
        began = time.monotonic()
        records = await task
        took = time.monotonic() - began
        await runner.close()
        await evaluator.close()
        return records, took, pid

    records, took, pid = asyncio.run(go())
    assert took < 3, f"the interrupt took {took:.1f}s to act"
    assert records["b"].status == NodeStatus.CANCELLED
    assert records["c"].status == NodeStatus.CANCELLED
    assert scheduler.run_status() == RunStatus.CANCELLED
    assert not os.path.exists(f"/proc/{pid}")  # killed and reaped


def test_interrupt_while_an_output_is_parsed_keeps_the_attempt_and_stops_at_once():
    # Passes the static checks, but each level of the value doubles the schema's work.
    text = """
    version: 1
    name: hostile-parse
    nodes:
      a:
        command: [x]
        outputs:
          parse:
            format: json
            schema:
              $defs: {n: {properties: {a: {allOf: [{$ref: "#/$defs/n"}, {$ref: "#/$defs/n"}]}}}}
              $ref: "#/$defs/n"
      b: {needs: [a], command: [x]}
    """
    deep = b'{"a": ' * 40 + b"{}" + b"}" * 40
    plan, sandboxes = admitted(text)
    backend = MemoryBackend(lambda spec: Outcome(stdout=deep))
    evaluator = Evaluator(seconds=120)
    runner = NodeRunner(backend, "test-run", "owner", evaluator=evaluator)
    scheduler = Scheduler(plan, sandboxes, runner.attempt, lambda e: None, evaluator=evaluator)

    async def go():
        stop = asyncio.Event()
        task = asyncio.create_task(scheduler.run(stop))
        deadline = time.monotonic() + 60
        while not (backend.removed and evaluator.pid):  # a ran; its output is being parsed
            assert time.monotonic() < deadline, "a's output was never parsed"
            await asyncio.sleep(0.01)
        stop.set()
        began = time.monotonic()
        records = await task
        took = time.monotonic() - began
        await runner.close()
        await evaluator.close()
        return records, took

    records, took = asyncio.run(go())
    assert took < 3, f"the interrupt took {took:.1f}s to act"
    assert records["a"].status == NodeStatus.CANCELLED
    (attempt,) = records["a"].attempts  # what it did is kept: it ran, exit code 0
    assert attempt.exit_code == 0 and attempt.reason == "run interrupted"
    assert records["b"].status == NodeStatus.CANCELLED
