"""A run's pods as one watch keeps them: what the backend waits on, instead of polling.

Polling each node's pod (its state and whether its log can be read) costs the API server
two list calls per node every half second: a hundred agents at once would be hundreds of
calls a second from one run. Instead each run has one watch (list, then watch from the
list's resourceVersion, as an informer does): its pods' latest states are kept here, and
a node waits for the next change.

Level-triggered, never trusting a stream: a wait also ends after `resync` seconds, and the
waiter then reads its pod itself, so a watch that stalls or a missed event costs time,
never a node. A watch that fails or is told its version is too old (410 Gone) lists
again; failures back off up to `resync`.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from .client import Cluster, ClusterError
from .pods import JOB_NAME_LABEL

RESYNC = 10.0  # seconds a waiter trusts the watch before it reads its pod itself
BACKOFF = 0.5  # seconds before the first retry of a failed watch, doubling to RESYNC
GONE = 410  # the API server's "too old resourceVersion": list again


class PodWatch:
    def __init__(self, cluster: Cluster, selector: str, resync: float = RESYNC) -> None:
        self.cluster = cluster
        self.selector = selector
        self.resync = resync
        self.generation = 0  # counts changes: a waiter names the last one it saw
        self._pods: dict[str, dict[str, Any]] = {}  # by pod name
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._streamed = False  # the current watch has sent a change

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._keep())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def pods_of(self, job: str) -> list[dict[str, Any]]:
        """The job's pods as last seen (checked here: a selector is the server's filter)."""
        return [p for p in self._pods.values() if _labels(p).get(JOB_NAME_LABEL) == job]

    async def changed(self, since: int) -> bool:
        """Wait until a change after generation `since` (at once if there was one); False
        when `resync` passed without one: the caller then reads the cluster itself."""
        try:
            async with asyncio.timeout(self.resync):
                while self.generation == since:
                    await self._changed.wait()
        except TimeoutError:
            return False
        return True

    def _notify(self) -> None:
        self.generation += 1
        self._changed.set()  # wakes every waiter; each then waits on the next event
        self._changed = asyncio.Event()

    async def _keep(self) -> None:
        delay = BACKOFF
        while True:
            self._streamed = False
            try:
                await self._list_and_watch()
                continue  # told to list again: at once
            except ClusterError:
                if self._streamed:
                    delay = BACKOFF  # it worked until now: a fresh start
            # A failed list or watch, or a stream that ended with nothing in it: never
            # a tight loop of calls against the API server.
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.resync)

    async def _list_and_watch(self) -> None:
        """List, then watch from the list's version until told it is too old (returns)
        or a stream ends empty or fails (raises ClusterError)."""
        items, version = await self.cluster.listing("Pod", self.selector)
        self._pods = {_name(p): p for p in items}
        self._notify()
        while True:  # each stream ends after the server's timeout: go on from the last
            events = 0
            async for event in self.cluster.watch("Pod", self.selector, version):
                events += 1
                kind, obj = event.get("type"), event["object"]
                if kind == "ERROR":
                    if obj.get("code") == GONE:
                        return
                    raise ClusterError(f"watch of pods: {str(obj.get('message'))[:300]}")
                version = _version(obj) or version
                self._streamed = True
                if kind == "DELETED":
                    self._pods.pop(_name(obj), None)
                elif kind in ("ADDED", "MODIFIED"):
                    self._pods[_name(obj)] = obj
                else:
                    continue  # BOOKMARK: only its version
                self._notify()
            if not events:
                raise ClusterError("watch of pods: a stream ended with no event")


def _labels(pod: dict[str, Any]) -> dict[str, Any]:
    return (pod.get("metadata") or {}).get("labels") or {}


def _name(pod: dict[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("name"))


def _version(obj: dict[str, Any]) -> str | None:
    version = (obj.get("metadata") or {}).get("resourceVersion")
    return version if isinstance(version, str) else None
