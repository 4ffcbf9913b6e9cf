"""Containers prepared ahead of time (timing/ahead.py, NodeRunner.prepare): which nodes are
chosen, and, on the in-memory backend, that a held container runs its command only after
its needs finished, and never when the node does not run."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque

import docker
import pytest

from sandbox_orch.backend.base import ContainerSpec
from sandbox_orch.backend.memory import MemoryBackend, Outcome
from sandbox_orch.backend.readback import differences
from sandbox_orch.backend.settings import container_kwargs
from sandbox_orch.execution import GATE, NODE_LABEL, NodeRunner
from sandbox_orch.planning import ArtifactIn, ArtifactOut
from sandbox_orch.status import NodeStatus, RunStatus
from sandbox_orch.timing.ahead import dependents, due, preparable, to_prepare

from .helpers import admitted, plan_of, run_on_memory

PENDING, RUNNING, DONE = NodeStatus.PENDING, NodeStatus.RUNNING, NodeStatus.SUCCEEDED
FAN = """
version: 1
name: fan
nodes:
  a: {command: [x]}
  b: {needs: [a], command: [x]}
  c: {needs: [a, b], command: [x]}
  d: {needs: [c], command: [x]}
"""


def statuses(**known: NodeStatus):
    return lambda name: known.get(name, PENDING)


# --- which nodes (pure) ------------------------------------------------------------------


def test_a_node_is_due_once_every_need_started_and_some_need_still_runs():
    c = plan_of(FAN).nodes["c"]
    assert due(c, statuses(a=RUNNING, b=RUNNING))
    assert due(c, statuses(a=DONE, b=RUNNING))
    assert not due(c, statuses(a=RUNNING))  # b not started: not next
    assert not due(c, statuses(a=DONE, b=DONE))  # ready: judged, not prepared
    assert not due(c, statuses(a=DONE, b=NodeStatus.FAILED))
    assert not due(c, statuses(a=RUNNING, b=RUNNING, c=RUNNING))  # not pending
    assert not due(c, statuses(a=RUNNING, b=RUNNING, c=NodeStatus.SKIPPED))
    assert not due(plan_of(FAN).nodes["a"], statuses())  # a root is simply started
    # A need that is held itself counts as started: prepared as far ahead as allowed.
    d = plan_of(FAN).nodes["d"]
    assert not due(d, statuses(a=RUNNING, b=RUNNING))
    assert due(d, statuses(a=RUNNING, b=RUNNING), held={"c"})
    assert due(c, statuses(a=RUNNING), held={"b"})


def test_a_node_whose_input_producer_still_runs_is_not_due():
    c = plan_of(FAN).nodes["c"]
    reads_b = dataclasses.replace(c, inputs=(ArtifactIn("b", "out", "/in"),))
    assert not due(reads_b, statuses(a=DONE, b=RUNNING))  # b still writes it
    reads_a = dataclasses.replace(c, inputs=(ArtifactIn("a", "out", "/in"),))
    assert due(reads_a, statuses(a=DONE, b=RUNNING))


def test_only_a_node_whose_container_is_final_before_it_is_due_is_preparable():
    b = plan_of(FAN).nodes["b"]
    assert preparable(b)
    assert not preparable(dataclasses.replace(b, prompt=object()))  # argv from its needs
    custom = dataclasses.replace(b.runtime, preset=False)
    assert not preparable(dataclasses.replace(b, runtime=custom))  # may have no gate
    assert not preparable(dataclasses.replace(b, artifacts=(ArtifactOut("o", "/o"),)))
    delayed = plan_of(FAN.replace("b: {needs: [a],", "b: {needs: [a], start_delay: 5s,"))
    assert not preparable(delayed.nodes["b"])


def test_dependents_are_listed_in_plan_order():
    assert dependents(plan_of(FAN)) == {"a": ("b", "c"), "b": ("c",), "c": ("d",), "d": ()}


def test_to_prepare_takes_up_to_room_drops_what_is_not_due_and_keeps_the_rest():
    plan = plan_of(FAN)
    offered = deque(["d", "b", "c", "c"])
    status = statuses(a=RUNNING, b=RUNNING)
    assert to_prepare(offered, plan, status, set(), room=1) == ["c"]  # d, b not due: dropped
    assert list(offered) == ["c"]  # kept for later
    assert to_prepare(offered, plan, status, {"c"}, room=1) == []  # held already
    offered = deque(["c", "c"])
    assert to_prepare(offered, plan, status, set(), room=5) == ["c"]  # once
    assert to_prepare(deque(["c"]), plan, status, set(), room=0) == []
    # What is chosen counts as held for what follows it in the same call.
    assert to_prepare(deque(["c", "d"]), plan, status, set(), room=2) == ["c", "d"]
    assert to_prepare(deque(["d", "c"]), plan, status, set(), room=2) == ["c"]


# --- on the in-memory backend -------------------------------------------------------------


class Recording(MemoryBackend):
    """Records every spec created; `held_now`: started gated containers not yet released
    or gone, with the peak; `when_held(n)` fires once n are held."""

    def __init__(self, script) -> None:
        super().__init__(script)
        self.specs: dict[str, list[ContainerSpec]] = {}
        self.held_now: set[str] = set()
        self.peak_held = 0
        self._waiters: list[tuple[int, asyncio.Event]] = []

    async def create(self, spec: ContainerSpec) -> str:
        self.specs.setdefault(spec.labels[NODE_LABEL], []).append(spec)
        return await super().create(spec)

    async def start(self, container_id: str, sink) -> None:
        await super().start(container_id, sink)
        if self.containers[container_id].spec.gated:
            self.held_now.add(container_id)
            self.peak_held = max(self.peak_held, len(self.held_now))
            for count, event in self._waiters:
                if len(self.held_now) >= count:
                    event.set()

    async def release(self, container_id: str) -> None:
        self.held_now.discard(container_id)
        await super().release(container_id)

    async def remove(self, container_id: str) -> None:
        self.held_now.discard(container_id)
        await super().remove(container_id)

    async def when_held(self, count: int) -> None:
        event = asyncio.Event()
        self._waiters.append((count, event))
        if len(self.held_now) >= count:
            event.set()
        await event.wait()


def run_held(text: str, outcomes=None, *, hold=4, until_held=1, **kwargs):
    """Run with `hold`; a node in `outcomes` named with a trailing `*` (e.g. "a*") first
    waits until `until_held` containers are held, so they are held while it runs."""
    outcomes = dict(outcomes or {})
    backend = None

    async def script(spec: ContainerSpec) -> Outcome:
        name = spec.labels[NODE_LABEL]
        if f"{name}*" in outcomes:
            await backend.when_held(until_held)
            return outcomes[f"{name}*"]
        return outcomes.get(name, Outcome())

    backend = Recording(script)
    plan, sandboxes = admitted(text)
    return run_on_memory(plan, sandboxes, script, hold=hold, backend=backend, **kwargs)


CHAIN = """
version: 1
name: chain
nodes:
  a: {command: [x]}
  b: {needs: [a], command: [x]}
  c: {needs: [b], command: [x]}
"""


def test_a_held_container_runs_its_command_only_after_its_need_finished():
    scheduler, _, backend, _ = run_held(CHAIN, {"a*": Outcome()})
    log = backend.log
    assert log.index(("start", "b")) < log.index(("exit", "a"))  # ready before it was due
    assert log.index(("start", "c")) < log.index(("exit", "a"))  # and the next one too
    assert log.index(("exit", "a")) < log.index(("release", "b"))
    assert log.index(("exit", "b")) < log.index(("release", "c"))
    assert [s.gated for s in backend.specs["b"]] == [True]
    assert backend.specs["b"][0].argv[0] == GATE
    assert backend.specs["a"][0].gated is False  # a root is started at once
    assert scheduler.run_status() == RunStatus.SUCCEEDED
    assert backend.containers == {}


def test_a_chain_is_prepared_as_far_ahead_as_the_bound_allows():
    _, records, backend, _ = run_held(CHAIN, {"a*": Outcome()}, hold=1)
    log = backend.log
    assert log.index(("start", "b")) < log.index(("exit", "a"))
    assert log.index(("release", "b")) < log.index(("start", "c"))  # one ahead only
    assert all(r.status == NodeStatus.SUCCEEDED for r in records.values())


def test_a_node_whose_need_failed_is_removed_held_and_its_command_never_ran():
    _, records, backend, _ = run_held(CHAIN, {"a*": Outcome(exit_code=1)}, fail_fast=False)
    assert records["b"].status == NodeStatus.SKIPPED
    assert ("start", "b") in backend.log  # it was held
    assert ("release", "b") not in backend.log  # and never released
    assert records["b"].attempts == []
    assert backend.containers == {}


def test_a_node_whose_condition_is_false_is_removed_held():
    text = CHAIN.replace("b: {needs: [a],", "b: {needs: [a], when: 'nodes.a.exit_code == 7',")
    _, records, backend, _ = run_held(text, {"a*": Outcome()})
    assert records["b"].status == NodeStatus.SKIPPED
    assert "condition is false" in records["b"].reason
    assert ("start", "b") in backend.log and ("release", "b") not in backend.log
    assert backend.containers == {}


def test_an_interrupt_removes_held_containers_unrun():
    def held(backend: MemoryBackend) -> bool:
        return any(c.spec.gated for c in backend.containers.values())

    text = CHAIN.replace("a: {command: [x]}", "a: {command: [x]}\n  slow: {command: [x]}")
    _, records, backend, _ = run_held(
        text, {"a": Outcome(hang=True), "slow": Outcome(hang=True)}, interrupt_when=held
    )
    assert ("start", "b") in backend.log and ("release", "b") not in backend.log
    assert records["b"].status == NodeStatus.CANCELLED
    assert backend.containers == {}


def test_the_number_of_held_containers_is_bounded():
    fan = "version: 1\nname: f\nnodes:\n  a: {command: [x]}\n" + "".join(
        f"  b{i}: {{needs: [a], command: [x]}}\n" for i in range(6)
    )
    _, records, backend, _ = run_held(fan, {"a*": Outcome()}, hold=2, until_held=2)
    assert backend.peak_held == 2
    assert all(r.status == NodeStatus.SUCCEEDED for r in records.values())
    assert sum(s.gated for specs in backend.specs.values() for s in specs) == 2


def test_held_containers_do_not_count_against_max_parallel():
    fan = "version: 1\nname: f\nnodes:\n  a: {command: [x]}\n" + "".join(
        f"  b{i}: {{needs: [a], command: [x]}}\n" for i in range(3)
    )
    _, records, backend, _ = run_held(fan, {"a*": Outcome()}, hold=3, until_held=3, max_parallel=1)
    assert backend.peak_held == 3 and backend.peak_running == 1
    assert all(r.status == NodeStatus.SUCCEEDED for r in records.values())


def test_a_retry_gets_a_fresh_container_of_its_own():
    text = CHAIN.replace("b: {needs: [a],", "b: {needs: [a], retries: {limit: 1, on: [failed]},")
    _, records, backend, _ = run_held(text, {"a*": Outcome(), "b": Outcome(exit_code=3)})
    assert [s.gated for s in backend.specs["b"]] == [True, False]
    assert len(records["b"].attempts) == 2


def test_without_hold_nothing_is_prepared():
    _, records, backend, _ = run_held(CHAIN, hold=0)
    assert not any(s.gated for specs in backend.specs.values() for s in specs)
    assert ("release", "b") not in backend.log
    assert all(r.status == NodeStatus.SUCCEEDED for r in records.values())


@pytest.mark.parametrize("cancel_at", ["create", "start"])
def test_a_preparation_cut_short_leaves_nothing(cancel_at):
    """discard() while the prepared container is being created or started."""

    async def scenario() -> MemoryBackend:
        backend = MemoryBackend()
        gate = asyncio.Event()
        original = getattr(backend, cancel_at)

        async def slow(*args):
            await gate.wait()
            return await original(*args)

        setattr(backend, cancel_at, slow)
        runner = NodeRunner(backend, "r", "o")
        plan, sandboxes = admitted(CHAIN)
        runner.prepare(plan.nodes["b"], sandboxes["b"])
        await asyncio.sleep(0)  # the preparation reaches the engine call and waits there
        runner.discard("b")
        gate.set()
        await runner.close()
        return backend

    backend = asyncio.run(scenario())
    assert backend.containers == {}
    assert ("release", "b") not in backend.log


# --- the container's settings --------------------------------------------------------------


API = docker.APIClient(version="1.41")  # only its create_host_config: no connection


def test_a_held_container_has_an_open_stdin_closed_with_our_attach_and_no_terminal():
    plan, sandboxes = admitted(CHAIN)
    spec = NodeRunner(MemoryBackend(), "r", "o").spec(plan.nodes["b"], sandboxes["b"], 1)
    kwargs = container_kwargs(dataclasses.replace(spec, gated=True), API)
    assert kwargs["stdin_open"] is True and kwargs["tty"] is False
    config = {"OpenStdin": True, "StdinOnce": True, "Tty": False, "Image": kwargs["image"]}
    attrs = {"Config": config, "HostConfig": {}}
    assert "StdinOnce" not in differences(kwargs, attrs, {})
    kept_open = {**attrs, "Config": {**config, "StdinOnce": False}}
    assert "StdinOnce" in differences(kwargs, kept_open, {})
    plain = container_kwargs(spec, API)
    assert plain["stdin_open"] is False
    stray = {**attrs, "Config": {**config, "OpenStdin": False, "StdinOnce": True}}
    assert "StdinOnce" in differences(plain, stray, {})


def test_a_backend_that_cannot_hold_containers_gets_none_prepared():
    class Plain(Recording):
        holds_containers = False

    backend = Plain(lambda spec: Outcome())
    plan, sandboxes = admitted(CHAIN)
    _, records, _, _ = run_on_memory(plan, sandboxes, backend.script, hold=4, backend=backend)
    assert not any(s.gated for specs in backend.specs.values() for s in specs)
    assert all(r.status == NodeStatus.SUCCEEDED for r in records.values())


def test_a_preparation_waits_while_a_due_nodes_container_is_being_started():
    """Due nodes are on the critical path: the engine serves their creates and starts
    alone, and preparations ahead of time follow."""

    async def scenario() -> list[str]:
        backend = Recording(lambda spec: Outcome())
        started = asyncio.Event()
        original_start = backend.start

        async def slow_start(container_id, sink):
            await started.wait()
            await original_start(container_id, sink)

        backend.start = slow_start  # type: ignore[method-assign]
        runner = NodeRunner(backend, "r", "o")
        plan, sandboxes = admitted(CHAIN)
        due = asyncio.ensure_future(runner.attempt(plan.nodes["a"], sandboxes["a"], 1))
        while "a" not in backend.specs:  # a's container is being made
            await asyncio.sleep(0)
        runner.prepare(plan.nodes["b"], sandboxes["b"])
        for _ in range(20):
            await asyncio.sleep(0)
        created_before = sorted(backend.specs)
        started.set()
        await due
        await runner._claim("b")
        await runner.close()
        return created_before, sorted(backend.specs)

    before, after = asyncio.run(scenario())
    assert before == ["a"]  # b's preparation waited for a's start
    assert after == ["a", "b"]
