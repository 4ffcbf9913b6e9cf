"""DockerBackend's exit status: the engine's OOMKilled flag can be set after the exit is
reported, so a SIGKILL that sandbox-orch did not send is checked against the engine's
"oom" events (stub API: the race cannot be provoked on demand on a real engine; the
real OOM path is tested in tests/integration)."""

from __future__ import annotations

import asyncio
import calendar
import threading
import time
from types import SimpleNamespace
from typing import Any

from sandbox_orch.backend import docker as docker_module
from sandbox_orch.backend.docker import DockerBackend, Exit

STARTED = "2026-11-25T02:42:01.620123456Z"


class Stream(list):
    closed = False

    def close(self) -> None:
        self.closed = True


class StubAPI:
    def __init__(self, exit_code: int, oom_flag: bool, oom_events: int) -> None:
        self.exit_code, self.oom_flag = exit_code, oom_flag
        self.stream = Stream([{"status": "oom"}] * oom_events)
        self.asked: list[dict[str, Any]] = []

    def wait(self, container_id: str) -> dict[str, int]:
        return {"StatusCode": self.exit_code}

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        return {"State": {"OOMKilled": self.oom_flag, "StartedAt": STARTED}}

    def events(self, **query: Any) -> Stream:
        self.asked.append(query)
        return self.stream

    def kill(self, container_id: str) -> None:
        pass


def wait(api: StubAPI, kill_first: bool = False):
    backend = DockerBackend(SimpleNamespace(api=api, close=lambda: None))

    async def go():
        if kill_first:
            await backend.kill("c1")
        try:
            return await backend.wait("c1")
        finally:
            await backend.close()

    return asyncio.run(go())


def test_a_late_oom_event_makes_the_kill_an_oom():
    api = StubAPI(137, oom_flag=False, oom_events=1)
    assert wait(api).oom_killed is True
    (query,) = api.asked
    assert query["filters"] == {"container": "c1", "event": "oom"}
    assert query["since"] == calendar.timegm(time.strptime(STARTED[:19], "%Y-%m-%dT%H:%M:%S"))
    assert query["until"] > time.time() - 60 and api.stream.closed


def test_a_sigkill_with_no_oom_event_is_not_an_oom():
    api = StubAPI(137, oom_flag=False, oom_events=0)
    status = wait(api)
    assert (status.exit_code, status.oom_killed) == (137, False) and len(api.asked) == 1


def test_our_own_kill_and_other_exits_do_not_wait_for_events():
    killed = StubAPI(137, False, 1)
    assert wait(killed, kill_first=True).oom_killed is False and killed.asked == []
    for api in (StubAPI(137, True, 0), StubAPI(1, False, 1), StubAPI(0, False, 1)):
        status = wait(api)
        assert status.oom_killed is (api.exit_code == 137) and api.asked == []


class Watch:
    """An OomWatch that has read the kernel's count already."""

    def __init__(self, killed: bool) -> None:
        self.killed, self.done = killed, threading.Event()
        self.done.set()


def test_a_gvisor_oom_the_engine_missed_is_the_kernel_count():
    """Docker can report a runsc container's OOM kill with neither OOMKilled nor an event:
    the kernel's count in its memory cgroup decides, without asking the event log."""
    api = StubAPI(137, oom_flag=False, oom_events=0)
    backend = DockerBackend(SimpleNamespace(api=api, close=lambda: None))
    backend._oom_watches["c1"] = Watch(killed=True)
    status = backend._collect("c1", Exit(137, oom_seen=False))
    assert (status.exit_code, status.oom_killed) == (137, True) and api.asked == []
    backend._oom_watches["c1"] = Watch(killed=False)  # counted none: the event log is asked
    assert backend._collect("c1", Exit(137, oom_seen=False)).oom_killed is False
    assert len(api.asked) == 1


def test_only_gvisor_containers_on_this_host_are_watched(monkeypatch):
    made: list[tuple[str, tuple[str, ...]]] = []
    monkeypatch.setattr(docker_module, "OomWatch", lambda cid, cgroups: made.append((cid, cgroups)))
    backend = DockerBackend(SimpleNamespace(api=StubAPI(0, False, 0), close=lambda: None))
    backend._gvisor_here.add("g1")
    backend._watch_oom("g1")
    backend._watch_oom("r1")  # runc: the engine's oom event is reliable
    assert made == [("g1", ("docker/{id}", "system.slice/docker-{id}.scope"))]
