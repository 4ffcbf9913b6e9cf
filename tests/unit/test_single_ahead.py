"""`single` ready sooner: the node's container is created and started (held by its gate)
while the workspace is copied, and released only once the copy is complete and checked.
On the in-memory backend, whose log orders start, release and exit; the copy is held
at a point of the test's choosing (events, never sleeps) so the orders are certain."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from sandbox_orch import single as single_module
from sandbox_orch.backend.memory import MemoryBackend, Outcome
from sandbox_orch.errors import InputRefused
from sandbox_orch.events import RunStarted
from sandbox_orch.orchestrator import RunOptions, run_plan
from sandbox_orch.single import WORKSPACE, SingleRequest, run_single
from sandbox_orch.single import workspace as workspace_module
from sandbox_orch.single.request import refused
from sandbox_orch.single.workspace import CopyStopped
from sandbox_orch.store import run_dir
from sandbox_orch.timing.countdown import StartCancelled
from sandbox_orch.timing.ready import roots_to_prepare, wait_ready

from .helpers import admitted, default_policy, plan_of

BIG = 3 << 20  # sorted last ("zz"): the last file the copy writes
WAIT = 10.0  # a bound on a wait for the other thread, never reached when all is well


class Started(MemoryBackend):
    """Tells the copy's thread when a container was started (held, for a gated one)."""

    def __init__(self, script) -> None:
        super().__init__(script)
        self.started = threading.Event()

    async def start(self, container_id, sink) -> None:
        await super().start(container_id, sink)
        self.started.set()


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SANDBOX_ORCH_HOME", str(tmp_path / "store"))
    root = tmp_path / "ws"
    root.mkdir()
    (root / "a.txt").write_text("a\n")
    (root / "zz-big.bin").write_bytes(bytes(range(256)) * (BIG // 256))
    return root


def seen_by_node(spec, seen: list[bytes]) -> Outcome:
    """The node's work: read its copy (as the container sees it, through the mount)."""
    (mount,) = [m for m in spec.mounts if m.target == WORKSPACE]
    seen.append((Path(mount.source) / "zz-big.bin").read_bytes())
    (Path(mount.source) / "new.txt").write_text("made by the node\n")
    return Outcome()


def hold_copy_until(event: threading.Event, monkeypatch, log: list) -> None:
    """The copy waits, after its last file is written but before its baseline and stamps
    (so before it is complete and checked), until `event`; its end is logged."""
    write_missing, finish = workspace_module._write_missing, single_module.finish_copy

    def held(*args):
        assert event.wait(WAIT), "the container was not started while the copy ran"
        return write_missing(*args)

    def logged(pending, stop):
        copy = finish(pending, stop)
        log.append(("copied", ""))
        return copy

    monkeypatch.setattr(workspace_module, "_write_missing", held)
    monkeypatch.setattr(single_module, "finish_copy", logged)


def test_the_container_starts_during_the_copy_and_runs_only_after_it(workspace, monkeypatch):
    seen: list[bytes] = []
    backend = Started(lambda spec: seen_by_node(spec, seen))
    hold_copy_until(backend.started, monkeypatch, backend.log)
    request = SingleRequest("shell", workspace, args=("sh", "-c", "true"))
    report = asyncio.run(
        run_single(request, default_policy(), backend, "r1", lambda e: None, asyncio.Event())
    )
    assert backend.log == [
        ("start", "single"), ("copied", ""), ("release", "single"), ("exit", "single")
    ]  # fmt: skip
    assert seen == [(workspace / "zz-big.bin").read_bytes()]  # all of it, as copied
    assert report.status == "succeeded" and backend.containers == {}
    assert report.patch is not None
    patch = report.patch.read_text()
    assert "+made by the node" in patch and "zz-big.bin" not in patch


def test_a_failed_copy_removes_the_held_container_unrun_and_leaves_nothing(workspace, monkeypatch):
    ran: list[object] = []
    backend = Started(lambda spec: ran.append(spec) or Outcome())
    copy_one = workspace_module._copy_one

    def unreadable(src, dst, entry, owner, algorithm):
        if entry.path == b"zz-big.bin":
            assert backend.started.wait(WAIT)  # the container is held by now
            raise refused("--workspace", "cannot read zz-big.bin: Permission denied")
        return copy_one(src, dst, entry, owner, algorithm)

    monkeypatch.setattr(workspace_module, "_copy_one", unreadable)
    events: list[object] = []
    request = SingleRequest("shell", workspace, args=("sh", "-c", "true"))
    with pytest.raises(InputRefused, match=r"cannot read zz-big\.bin"):
        asyncio.run(
            run_single(request, default_policy(), backend, "r2", events.append, asyncio.Event())
        )
    assert ("start", "single") in backend.log and ("release", "single") not in backend.log
    assert ran == [] and backend.containers == {} and backend.removed
    assert events == []  # no run_started: the run never began
    assert not run_dir("r2").exists()  # no copy, no results, no run directory


def test_an_interrupt_during_the_copy_stops_it_and_removes_the_held_container(
    workspace, monkeypatch
):
    ran: list[object] = []
    backend = Started(lambda spec: ran.append(spec) or Outcome())
    interrupt = asyncio.Event()
    stops: list[threading.Event] = []
    outcome: list[BaseException] = []
    finish, copy_one = single_module.finish_copy, workspace_module._copy_one
    loops: list[asyncio.AbstractEventLoop] = []

    def kept_stop(pending, stop):
        stops.append(stop)
        try:
            return finish(pending, stop)
        except BaseException as error:
            outcome.append(error)
            raise

    def slow_first(src, dst, entry, owner, algorithm):
        if entry.path == b"a.txt":  # Ctrl-C once the container is held, then wait for
            assert backend.started.wait(WAIT)  # the run to stop the copy
            loops[0].call_soon_threadsafe(interrupt.set)
            assert stops[0].wait(WAIT)
        return copy_one(src, dst, entry, owner, algorithm)

    monkeypatch.setattr(single_module, "finish_copy", kept_stop)
    monkeypatch.setattr(workspace_module, "_copy_one", slow_first)
    request = SingleRequest("shell", workspace, args=("sh", "-c", "true"))
    events: list[object] = []

    async def go() -> None:
        loops.append(asyncio.get_running_loop())
        await run_single(request, default_policy(), backend, "r3", events.append, interrupt)

    with pytest.raises(StartCancelled, match="nothing was started"):
        asyncio.run(go())
    assert [type(e) for e in outcome] == [CopyStopped]  # stopped, not finished
    assert ("release", "single") not in backend.log and ran == []
    assert backend.containers == {} and events == []
    assert not run_dir("r3").exists()


def test_run_plan_prepares_the_roots_during_the_wait_and_records_nothing_until_it_ends():
    plan, sandboxes = admitted(
        """
        version: 1
        name: t
        nodes:
          a: {command: ["true"]}
          b: {command: ["true"]}
          c: {needs: [a, b], command: ["true"]}
        """
    )
    backend = MemoryBackend()
    events: list[object] = []
    seen_at_ready: list[tuple] = []

    async def ready() -> None:
        while len(backend.log) < 2:  # both roots started (held): the loop runs meanwhile
            await asyncio.sleep(0)
        seen_at_ready.extend([tuple(backend.log), tuple(events)])
        backend.log.append(("ready", ""))

    async def go():
        return await run_plan(
            plan, default_policy(), sandboxes, backend, "r4", events.append,
            asyncio.Event(), RunOptions(ready=ready()),
        )  # fmt: skip

    report = asyncio.run(go())
    assert report.status == "succeeded"
    log_then, events_then = seen_at_ready
    assert sorted(log_then) == [("start", "a"), ("start", "b")]  # held, not released
    assert events_then == ()  # no run_started before it is ready
    ready_at = backend.log.index(("ready", ""))
    assert ready_at < backend.log.index(("release", "a"))
    assert ready_at < backend.log.index(("release", "b"))
    assert ready_at < backend.log.index(("start", "c"))  # due only once a and b started
    assert isinstance(events[0], RunStarted)


def test_roots_to_prepare_are_the_unconditional_preparable_roots_up_to_room():
    plan = plan_of(
        """
        version: 1
        name: t
        nodes:
          a: {command: ["true"]}
          b: {command: ["true"], when: "true"}
          c: {command: ["true"], start_delay: 5s}
          d: {needs: [a], command: ["true"]}
          e: {command: ["true"]}
        """
    )
    assert roots_to_prepare(plan, 4) == ["a", "e"]
    assert roots_to_prepare(plan, 1) == ["a"]
    assert roots_to_prepare(plan, 0) == []


def test_wait_ready_raises_what_failed_and_stops_on_an_interrupt():
    async def failing() -> None:
        raise InputRefused([])

    async def never() -> None:
        await asyncio.Event().wait()

    async def go() -> None:
        with pytest.raises(InputRefused):
            await wait_ready(failing(), asyncio.Event())
        interrupt = asyncio.Event()
        interrupt.set()
        task = asyncio.ensure_future(never())
        with pytest.raises(StartCancelled):
            await wait_ready(task, interrupt)
        assert not task.done()  # left to its owner
        task.cancel()
        await wait_ready(asyncio.sleep(0), asyncio.Event())  # done: returns

    asyncio.run(go())
