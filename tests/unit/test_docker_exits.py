"""Exits from the engine's event stream (backend/exits.py), on a stream of our own."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

from sandbox_orch.backend.base import ExitStatus
from sandbox_orch.backend.docker import DockerBackend
from sandbox_orch.backend.exits import EVENTS, Exit, Exits

END = object()


class Stream:
    """An event stream fed by the test; iteration blocks until the next event."""

    def __init__(self) -> None:
        self.events: queue.Queue[Any] = queue.Queue()
        self.opened = 0
        self.closed = False

    def open(self) -> Iterator[dict[str, Any]]:
        self.opened += 1
        return self

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        event = self.events.get(timeout=10)
        if event is END:
            raise StopIteration
        if isinstance(event, BaseException):
            raise event
        return event

    def close(self) -> None:
        self.closed = True
        self.events.put(END)


def event(container_id: str, action: str, **attributes: str) -> dict[str, Any]:
    return {"id": container_id, "status": action, "Actor": {"Attributes": attributes}}


def test_a_followed_containers_die_gives_its_exit_code_and_an_earlier_oom():
    async def scenario() -> tuple[Exit, Exit]:
        stream = Stream()
        exits = Exits(stream.open)
        exits.follow("a")
        exits.follow("b")
        first, second = exits.exited("a"), exits.exited("b")
        assert first is not None and second is not None
        stream.events.put(event("other", "die", exitCode="9"))  # not ours: ignored
        stream.events.put(event("b", "oom"))
        stream.events.put(event("a", "die", exitCode="3"))
        stream.events.put(event("b", "die", exitCode="137"))
        results = await asyncio.wait_for(asyncio.gather(first, second), 10)
        exits.close()
        assert stream.opened == 1 and stream.closed
        return results[0], results[1]

    a, b = asyncio.run(scenario())
    assert a == Exit(3, False)
    assert b == Exit(137, True)


def test_an_exit_announced_before_it_is_asked_for_is_kept():
    async def scenario() -> Exit:
        stream = Stream()
        exits = Exits(stream.open)
        exits.follow("a")
        stream.events.put(event("a", "die", exitCode="0"))
        for _ in range(1000):  # until the reader thread has taken it
            if exits._exits:
                break
            await asyncio.sleep(0.01)
        future = exits.exited("a")
        assert future is not None
        return await asyncio.wait_for(future, 10)

    assert asyncio.run(scenario()) == Exit(0, False)


def test_nothing_is_promised_for_a_container_not_followed_or_once_the_stream_broke():
    async def scenario() -> None:
        stream = Stream()
        exits = Exits(stream.open)
        assert exits.exited("a") is None  # not followed: `wait` answers alone
        exits.follow("a")
        pending = exits.exited("a")
        assert pending is not None and not pending.done()
        stream.events.put(ConnectionError("engine gone"))
        for _ in range(1000):
            if exits.broken:
                break
            await asyncio.sleep(0.01)
        assert exits.broken
        assert exits.exited("a") is None
        exits.forget("a")
        assert exits.exited("a") is None

    asyncio.run(scenario())


def test_a_die_without_an_exit_code_is_left_to_wait():
    async def scenario() -> bool:
        stream = Stream()
        exits = Exits(stream.open)
        exits.follow("a")
        future = exits.exited("a")
        assert future is not None
        stream.events.put(event("a", "die"))
        stream.events.put(event("a", "destroy"))
        stream.close()
        for _ in range(1000):
            if exits.broken:
                break
            await asyncio.sleep(0.01)
        return future.done()

    assert asyncio.run(scenario()) is False


class SlowWaitAPI:
    """An engine whose `wait` answers only when the test lets it (after its clean-up),
    while its event stream announces the exit at once."""

    def __init__(self, stream: Stream, exit_code: int, oom_flag: bool = False) -> None:
        self.stream, self.exit_code, self.oom_flag = stream, exit_code, oom_flag
        self.cleaned_up = threading.Event()
        self.inspected = 0

    def events(self, **query: Any) -> Stream:
        assert query["filters"] == EVENTS
        return self.stream

    def wait(self, container_id: str) -> dict[str, int]:
        self.cleaned_up.wait(timeout=30)
        return {"StatusCode": self.exit_code}

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        self.inspected += 1
        return {"State": {"OOMKilled": self.oom_flag, "StartedAt": "2026-12-02T00:00:00.0Z"}}


def backend_wait(api: SlowWaitAPI, *events: dict[str, Any]) -> ExitStatus:
    backend = DockerBackend(SimpleNamespace(api=api, close=lambda: None))

    async def go() -> ExitStatus:
        backend._exits.follow("c1")  # as create does, before the start
        for announced in events:
            api.stream.events.put(announced)
        try:
            return await asyncio.wait_for(backend.wait("c1"), 10)
        finally:
            api.cleaned_up.set()
            await backend.close()

    return asyncio.run(go())


def test_the_backend_takes_the_exit_from_die_without_waiting_for_the_engines_clean_up():
    api = SlowWaitAPI(Stream(), exit_code=0)
    assert backend_wait(api, event("c1", "die", exitCode="4")) == ExitStatus(4, False)
    assert api.inspected == 0  # nothing else asked: the exit code and no oom are known


def test_an_oom_event_before_die_is_an_oom_kill():
    api = SlowWaitAPI(Stream(), exit_code=0)
    found = backend_wait(api, event("c1", "oom"), event("c1", "die", exitCode="1"))
    assert found == ExitStatus(1, True)


def test_a_sigkill_from_die_with_no_oom_seen_asks_the_engine():
    api = SlowWaitAPI(Stream(), exit_code=137, oom_flag=True)
    assert backend_wait(api, event("c1", "die", exitCode="137")) == ExitStatus(137, True)
    assert api.inspected == 1


def test_an_engine_that_will_not_stream_events_leaves_exits_to_wait():
    def refuse() -> Iterator[dict[str, Any]]:
        raise ConnectionError("no events here")

    async def scenario() -> None:
        exits = Exits(refuse)
        exits.follow("a")
        assert exits.broken
        assert exits.exited("a") is None

    asyncio.run(scenario())
