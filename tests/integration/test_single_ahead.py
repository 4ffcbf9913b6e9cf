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
from sandbox_orch.store import new_run_id, run_dir
from sandbox_orch.timing.countdown import StartCancelled

from ..conftest import REPO, labelled_leftovers
from .conftest import mock_requests, tool_results_seen

pytestmark = pytest.mark.engine

LAST = b"zz-last.bin"  # sorted last: the copy's last file
WAIT = 120.0  # a bound on waiting for the engine, never reached when all is well


async def run_noting_start(request, policy_path, run_id, started, interrupt=None):
    """run_single on the real engine, `started` set once its container has started."""
    backend = docker_backend()
    start = backend.start

    async def noting(container_id, sink):
        await start(container_id, sink)
        started.set()

    backend.start = noting
    try:
        policy = load_policy(policy_path)
        return await run_single(request, policy, backend, run_id, lambda e: None,
                                interrupt or asyncio.Event())  # fmt: skip
    finally:
        await backend.close()


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

    report = asyncio.run(run_noting_start(request, policy_path, run_id, started))
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


def test_an_interrupt_during_the_copy_removes_the_held_container_unrun(
    tmp_path, workdir, monkeypatch, docker_client
):
    """Ctrl-C once the node's container is started (held) and before the copy's last
    file: the copy stops, the container is removed with its command never run (it exits
    as its gate does when held), nothing of the run is left."""
    workspace = tmp_path / "project"
    workspace.mkdir()
    (workspace / "a.txt").write_text("a\n")
    (workspace / os.fsdecode(LAST)).write_bytes(b"last\n")
    started, stops = threading.Event(), []
    interrupt = asyncio.Event()
    loops: list[asyncio.AbstractEventLoop] = []
    copy_one, finish = workspace_module._copy_one, single_module.finish_copy

    def interrupted_before_last(src, dst, entry, owner, algorithm):
        if entry.path == LAST:
            assert started.wait(WAIT), "the container was not started during the copy"
            loops[0].call_soon_threadsafe(interrupt.set)
            assert stops[0].wait(WAIT), "the copy was not stopped"
        return copy_one(src, dst, entry, owner, algorithm)

    def kept_stop(pending, stop):
        stops.append(stop)
        return finish(pending, stop)

    monkeypatch.setattr(workspace_module, "_copy_one", interrupted_before_last)
    monkeypatch.setattr(single_module, "finish_copy", kept_stop)
    run_id, since = new_run_id(), time.time()
    request = SingleRequest("shell", workspace, args=("true",))

    async def go():
        loops.append(asyncio.get_running_loop())
        policy = REPO / "policies" / "default.yaml"
        await run_noting_start(request, policy, run_id, started, interrupt)

    with pytest.raises(StartCancelled, match="nothing was started"):
        asyncio.run(go())
    events = docker_client.events(
        since=since, until=time.time(), decode=True,
        filters={"type": "container", "label": f"sandbox-orch.run={run_id}"},
    )  # fmt: skip
    seen = [(e["Action"], e["Actor"]["Attributes"].get("exitCode")) for e in events]
    actions = [action for action, _ in seen]
    assert actions.count("create") == 1 and "start" in actions and "destroy" in actions
    # Its gate's exits only (images/base/sandbox-orch-gate): 125, stdin closed with no
    # "go", or 137, killed while held; `true` would have exited 0.
    (died,) = [code for action, code in seen if action == "die"]
    assert died in ("125", "137")
    assert labelled_leftovers(docker_client, run_id) == []
    assert not run_dir(run_id).exists()


@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_what_the_copy_writes_after_the_start_is_what_the_node_sees(
    runtime, tmp_path, workdir, monkeypatch, docker_client
):
    """The whole copy (directories and files) is written into the bind mount's source
    after the held container started: under runc and gVisor (whose gofer serves the
    mount) the node sees all of it, and the patch holds only what it changed."""
    workspace = tmp_path / "project"
    (workspace / "sub").mkdir(parents=True)
    (workspace / "sub" / "a.txt").write_text("a\n")
    content = os.urandom(4 << 20)
    (workspace / os.fsdecode(LAST)).write_bytes(content)
    policy = tmp_path / "policy.yaml"
    shipped = (REPO / "policies" / "default.yaml").read_text()
    policy.write_text(shipped.replace("oci_runtime: runc", f"oci_runtime: {runtime}"))
    started = threading.Event()
    copy_one = workspace_module._copy_one

    def after_the_start(src, dst, entry, owner, algorithm):
        assert started.wait(WAIT), "the container was not started during the copy"
        return copy_one(src, dst, entry, owner, algorithm)

    monkeypatch.setattr(workspace_module, "_copy_one", after_the_start)
    run_id = new_run_id()
    script = "cat sub/a.txt; sha256sum zz-last.bin; echo new > sub/b.txt"
    request = SingleRequest("shell", workspace, args=("sh", "-c", script))

    report = asyncio.run(run_noting_start(request, policy, run_id, started))
    node = report.results["nodes"]["single"]
    assert report.status == "succeeded" and node["sandbox"]["oci_runtime"] == runtime, node
    digest = hashlib.sha256(content).hexdigest()
    assert node["stdout_tail"] == f"a\n{digest}  zz-last.bin\n"
    assert report.patch is not None
    patch = report.patch.read_text()
    assert "+++ b/sub/b.txt" in patch and patch.count("+++ ") == 1
    assert labelled_leftovers(docker_client, run_id) == []
