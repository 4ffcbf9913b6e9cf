"""PodWatch (podwatch.py) against a scripted stand-in for the cluster's list and watch:
what it keeps, whom it wakes, and how it retries (its sleeps recorded, not slept)."""

from __future__ import annotations

import asyncio

import pytest

from sandbox_orch.backend.kubernetes import podwatch
from sandbox_orch.backend.kubernetes.client import ClusterError
from sandbox_orch.backend.kubernetes.podwatch import PodWatch


def _pod(name: str, job: str, version: str, phase: str = "Running") -> dict:
    return {
        "metadata": {"name": name, "labels": {"job-name": job}, "resourceVersion": version},
        "status": {"phase": phase},
    }


class ScriptedCluster:
    """`listing` answers from `pods`; each `watch` call plays the next script: a list of
    events, or an exception to raise; past the scripts a watch waits forever."""

    def __init__(self, pods: list[dict], scripts: list) -> None:
        self.pods, self.scripts = pods, scripts
        self.lists: list[str] = []
        self.watches: list[str | None] = []

    async def listing(self, kind: str, selector: str):
        self.lists.append(selector)
        return list(self.pods), str(len(self.lists))

    async def watch(self, kind: str, selector: str, version: str | None):
        self.watches.append(version)
        script = self.scripts.pop(0) if self.scripts else None
        if isinstance(script, Exception):
            raise script
        if script is None:
            await asyncio.Event().wait()
        for event in script:
            yield event


def test_changes_are_kept_deletions_forgotten_bookmarks_only_move_the_version():
    async def scenario():
        cluster = ScriptedCluster(
            [_pod("a-x1", "a", "1", "Pending")],
            [[
                {"type": "MODIFIED", "object": _pod("a-x1", "a", "2", "Running")},
                {"type": "ADDED", "object": _pod("b-x1", "b", "3")},
                {"type": "DELETED", "object": _pod("b-x1", "b", "4")},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}},
            ]],
        )  # fmt: skip
        watch = PodWatch(cluster, "run=r", resync=0.2)
        watch.start()
        while len(cluster.watches) < 2:  # the first stream has ended
            await watch.changed(watch.generation)
        await watch.close()
        return cluster, watch

    cluster, watch = asyncio.run(scenario())
    assert [p["status"]["phase"] for p in watch.pods_of("a")] == ["Running"]
    assert watch.pods_of("b") == [] and watch.pods_of("c") == []
    assert watch.generation == 4  # the list and three changes: the bookmark is none
    # The stream ended with events in it: watched again from the last version (the
    # bookmark's), with no new list.
    assert cluster.lists == ["run=r"] and cluster.watches == ["1", "9"]


def test_a_waiter_that_missed_a_change_returns_at_once():
    async def scenario():
        watch = PodWatch(ScriptedCluster([], []), "run=r", resync=30)
        before = watch.generation
        watch._notify()  # a change between the waiter's read and its wait
        async with asyncio.timeout(1):
            return await watch.changed(before)

    assert asyncio.run(scenario()) is True


def test_a_quiet_watch_ends_a_wait_after_resync_so_the_waiter_reads_itself():
    async def scenario():
        watch = PodWatch(ScriptedCluster([], []), "run=r", resync=0.05)
        return await watch.changed(watch.generation)

    assert asyncio.run(scenario()) is False


@pytest.mark.parametrize(
    "failure",
    [
        ClusterError("watch of pods: connection reset"),
        [],  # a stream that ended with nothing in it
        [{"type": "ERROR", "object": {"code": 500, "message": "etcd is sad"}}],
    ],
)
def test_failed_watches_back_off_doubling_up_to_resync_never_a_tight_loop(monkeypatch, failure):
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)
        if len(slept) == 6:
            raise asyncio.CancelledError

    monkeypatch.setattr(podwatch.asyncio, "sleep", sleep)
    cluster = ScriptedCluster([], [failure] * 10)
    watch = PodWatch(cluster, "run=r", resync=4.0)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(watch._keep())
    assert slept == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert len(cluster.lists) == 6  # listed again after each failure


def test_a_gone_version_lists_again_at_once():
    async def scenario():
        gone = [{"type": "ERROR", "object": {"kind": "Status", "code": 410}}]
        cluster = ScriptedCluster([_pod("a-x1", "a", "1")], [gone])
        watch = PodWatch(cluster, "run=r", resync=0.2)
        watch.start()
        while len(cluster.watches) < 2:
            await watch.changed(watch.generation)
        await watch.close()
        return cluster

    cluster = asyncio.run(scenario())
    assert cluster.lists == ["run=r", "run=r"] and cluster.watches == ["1", "2"]
