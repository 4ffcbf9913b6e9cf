"""Container exits as the engine announces them, read from one stream of its events.

The engine emits `die` (with the exit code) as soon as it has the container's exit and
its output is flushed, and answers `wait` only after its own clean-up of the container
(unmounting, saving its state): tens of milliseconds later under runc, more under load
or gVisor. A node whose next node is held ready (timing/ahead.py) should not wait for
that, so the backend takes the exit from `die`, and `wait` stays the fallback: whichever
answers first. An `oom` event comes before its container's `die`.

Only containers registered here (ours, before they start) are followed; the stream is
opened on the first registration, so no exit of a registered container can be missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

EVENTS = {"type": ["container"], "event": ["die", "oom"]}


@dataclass(frozen=True)
class Exit:
    exit_code: int
    oom_seen: bool | None  # an `oom` event came before it; None: not known (from `wait`)


class Exits:
    def __init__(self, open_stream: Callable[[], Iterator[dict[str, Any]]]) -> None:
        """`open_stream()`: the engine's event stream, already subscribed when it returns
        (e.g. `lambda: api.events(filters=EVENTS, decode=True)`)."""
        self._open = open_stream
        self._lock = threading.Lock()
        self._stream: Iterator[dict[str, Any]] | None = None
        self._followed: set[str] = set()
        self._oom: set[str] = set()
        self._exits: dict[str, Exit] = {}
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Exit]]]] = {}
        self.broken = False  # the stream failed or ended: only `wait` answers now

    def follow(self, container_id: str) -> None:
        """Follow it from now on (call before it starts; blocking: on a worker thread)."""
        with self._lock:
            if self._stream is None and not self.broken:
                try:
                    self._stream = self._open()
                except Exception:  # an engine that will not stream events: `wait` answers
                    self.broken = True
                    return
                threading.Thread(target=self._read, daemon=True, name="exits").start()
            self._followed.add(container_id)

    def forget(self, container_id: str) -> None:
        with self._lock:
            self._followed.discard(container_id)
            self._oom.discard(container_id)
            self._exits.pop(container_id, None)
            self._waiters.pop(container_id, None)

    def exited(self, container_id: str) -> asyncio.Future[Exit] | None:
        """Its exit, once announced; None when it is not followed (or the stream broke)."""
        future: asyncio.Future[Exit] = asyncio.get_running_loop().create_future()
        with self._lock:
            if container_id not in self._followed or self.broken:
                return None
            known = self._exits.get(container_id)
            if known is None:
                loop = asyncio.get_running_loop()
                self._waiters.setdefault(container_id, []).append((loop, future))
                return future
        future.set_result(known)
        return future

    def close(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
            self.broken = True
        close = getattr(stream, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()

    def _read(self) -> None:
        assert self._stream is not None
        with contextlib.suppress(Exception):  # the engine went away: `wait` still answers
            for event in self._stream:
                self._seen(event)
        with self._lock:
            self.broken = True

    def _seen(self, event: dict[str, Any]) -> None:
        container_id = str(event.get("id") or "")
        action = event.get("status") or event.get("Action")
        with self._lock:
            if container_id not in self._followed:
                return
            if action == "oom":
                self._oom.add(container_id)
                return
            if action != "die":
                return
            code = (event.get("Actor") or {}).get("Attributes", {}).get("exitCode")
            if code is None:
                return  # nothing to go by: `wait` answers
            done = Exit(int(code), container_id in self._oom)
            self._exits[container_id] = done
            waiters = self._waiters.pop(container_id, [])
        for loop, future in waiters:
            loop.call_soon_threadsafe(_settle, future, done)


def _settle(future: asyncio.Future[Exit], done: Exit) -> None:
    if not future.done():
        future.set_result(done)
