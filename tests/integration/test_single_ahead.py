"""`single claude` ready sooner, on the real engine with the real Claude Code CLI: its
container is created and started (held by its gate) while the workspace is copied, and
the agent runs only once the copy is complete, seeing all of it. In-process, so the copy
can be held at a point of the test's choosing (an event, never a sleep): the last file
is copied only once the container has started. Runtime-independent (the order is the
host's): runc only."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time

import pytest

from sandbox_orch import single as single_module
from sandbox_orch.engine import docker_backend
from sandbox_orch.policy import load_policy
from sandbox_orch.single import SingleRequest, run_single
from sandbox_orch.single import workspace as workspace_module
from sandbox_orch.store import new_run_id

from ..conftest import labelled_leftovers
from .conftest import mock_requests, tool_results_seen

pytestmark = pytest.mark.engine

LAST = b"zz-last.bin"  # sorted last: the copy's last file
WAIT = 120.0  # a bound on waiting for the engine, never reached when all is well


@pytest.mark.parametrize("agent_policy", ["runc"], indirect=True)
def test_the_agent_s_container_starts_during_the_copy_and_sees_all_of_it(
    agent_policy, mock_api, tmp_path, workdir, keys, monkeypatch, docker_client
):
    policy_path, _ = agent_policy
    for name, value in keys.items():
        monkeypatch.setenv(name, value)
    workspace = tmp_path / "project"
    workspace.mkdir()
    (workspace / "app.py").write_text("print('hello')\n")
    content = os.urandom(8 << 20)
    (workspace / os.fsdecode(LAST)).write_bytes(content)
    started = threading.Event()  # the node's container started (held)
    times: dict[str, float] = {}
    copy_one, finish = workspace_module._copy_one, single_module.finish_copy

    def last_after_start(src, dst, entry, owner, algorithm):
        if entry.path == LAST:
            assert started.wait(WAIT), "the container was not started during the copy"
            times["last file"] = time.time()
        return copy_one(src, dst, entry, owner, algorithm)

    def timed(pending, stop):
        copy = finish(pending, stop)
        times["copied"] = time.time()
        return copy

    monkeypatch.setattr(workspace_module, "_copy_one", last_after_start)
    monkeypatch.setattr(single_module, "finish_copy", timed)
    run_id, before = new_run_id(), len(mock_requests(mock_api))
    request = SingleRequest("claude", workspace, prompt=f"SHA256:/workspace/{LAST.decode()}")

    async def go():
        backend = docker_backend()
        start = backend.start

        async def noting(container_id, sink):
            await start(container_id, sink)
            started.set()

        backend.start = noting
        try:
            policy = load_policy(policy_path)
            return await run_single(request, policy, backend, run_id, lambda e: None,
                                    asyncio.Event())  # fmt: skip
        finally:
            await backend.close()

    report = asyncio.run(go())
    assert report.status == "succeeded", report.results["nodes"]["single"]
    requests = mock_requests(mock_api)[before:]
    assert times["last file"] < times["copied"] <= requests[0]["received"]
    (result,) = tool_results_seen(requests)
    assert result == {
        "is_error": False,
        "content": f"{hashlib.sha256(content).hexdigest()}  /workspace/{LAST.decode()}",
    }  # the whole file, as copied last
    assert report.patch is None  # it only read: the baseline is what it saw
    assert labelled_leftovers(docker_client, run_id) == []
