"""`sandbox-orch gc`: removes what dead runs left behind, never what a live run owns."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket

import docker.errors
import psutil
import pytest

from sandbox_orch.backend import hostvolumes
from sandbox_orch.engine import VOLUMES_ENV
from tests.conftest import cli, interrupt, labelled_leftovers, start_cli, write_workflow
from tests.integration.test_hardening import read_events_until, wait_for_running_container

pytestmark = pytest.mark.engine

RUN_LABEL = "sandbox-orch.run"
OWNER_LABEL = "sandbox-orch.owner"


def live_owner() -> str:
    """This test process, as a run's owner label names it (host:pid:start time)."""
    started = int(psutil.Process().create_time())
    return f"{socket.gethostname()}:{os.getpid()}:{started}"


def dead_owner() -> str:
    pid = 999_999
    assert not psutil.pid_exists(pid)
    return f"{socket.gethostname()}:{pid}:1"


def exists(collection, key: str) -> bool:
    try:
        collection.get(key)
    except docker.errors.NotFound:
        return False
    return True


def test_gc_removes_dead_runs_leftovers_and_keeps_live_ones(built_images, docker_client):
    tag = secrets.token_hex(4)
    dead_run, live_run = f"gc-test-{tag}", f"gc-test-live-{tag}"
    dead = {RUN_LABEL: dead_run, OWNER_LABEL: dead_owner()}
    recycled = {RUN_LABEL: dead_run, OWNER_LABEL: f"{live_owner().rsplit(':', 1)[0]}:1"}
    live = {RUN_LABEL: live_run, OWNER_LABEL: live_owner()}
    # Another host sharing the engine: its runs' liveness is unknowable here, so kept.
    elsewhere = {RUN_LABEL: live_run, OWNER_LABEL: f"elsewhere-{tag}.invalid:1:1"}
    image = built_images["shell"].ref
    created: list[tuple[object, str]] = []
    try:
        # A dead run's running container (gc must kill it), a stopped one, its network
        # and its volume; one whose owner pid is alive but is another process (started
        # at another time: the pid was recycled); and a live run's container and volume.
        running = docker_client.containers.run(
            image, ["sleep", "300"], labels=dead, detach=True, network_mode="none", init=True
        )
        created.append((docker_client.containers, running.id))
        stopped = docker_client.containers.create(image, ["true"], labels=dead)
        created.append((docker_client.containers, stopped.id))
        network = docker_client.networks.create(f"gc-test-{tag}", labels=dead, internal=True)
        created.append((docker_client.networks, network.id))
        volume = docker_client.volumes.create(f"gc-test-{tag}", labels=dead)
        created.append((docker_client.volumes, volume.name))
        reused = docker_client.containers.create(image, ["true"], labels=recycled)
        created.append((docker_client.containers, reused.id))
        kept = docker_client.containers.create(image, ["true"], labels=live)
        created.append((docker_client.containers, kept.id))
        kept_volume = docker_client.volumes.create(f"gc-test-live-{tag}", labels=live)
        created.append((docker_client.volumes, kept_volume.name))
        foreign = docker_client.containers.create(image, ["true"], labels=elsewhere)
        created.append((docker_client.containers, foreign.id))
        assert len(labelled_leftovers(docker_client, dead_run)) == 5

        proc = cli("gc")
        assert proc.returncode == 0, proc.stderr

        assert labelled_leftovers(docker_client, dead_run) == []
        for gone in (running.id, stopped.id, reused.id):
            assert not exists(docker_client.containers, gone)
            assert f"removed container {gone[:12]}" in proc.stdout
        assert not exists(docker_client.networks, network.id)
        assert not exists(docker_client.volumes, volume.name)
        assert exists(docker_client.containers, kept.id)
        assert exists(docker_client.volumes, kept_volume.name)
        assert sorted(labelled_leftovers(docker_client, live_run)) == sorted(
            [
                f"container {kept.id[:12]}",
                f"container {foreign.id[:12]}",
                f"volume {kept_volume.name}",
            ]
        )
    finally:
        for collection, key in reversed(created):
            with contextlib.suppress(docker.errors.NotFound):
                thing = collection.get(key)
                if hasattr(thing, "kill"):
                    thing.remove(force=True)
                else:
                    thing.remove()
    assert labelled_leftovers(docker_client, dead_run) == []
    assert labelled_leftovers(docker_client, live_run) == []


def test_gc_during_a_live_run_leaves_it_alone(workdir, built_images, docker_client):
    path = write_workflow(
        workdir,
        """
        version: 1
        name: busy
        nodes:
          busy: {command: "sleep 30"}
        """,
    )
    proc = start_cli("run", str(path), "--json", "--results", str(workdir / "results.json"))
    try:
        run_id = read_events_until(proc, "node_started")[0]["run_id"]
        container = wait_for_running_container(docker_client, run_id, "busy")
        collected = cli("gc")
        assert collected.returncode == 0, collected.stderr
        container.reload()
        assert container.status == "running"
        assert container.id[:12] not in collected.stdout
    finally:
        code, _out, err = interrupt(proc, signal.SIGINT)
    assert code == 130, err
    assert labelled_leftovers(docker_client, run_id) == []


@pytest.mark.parametrize("store", ["host", "engine"])
def test_gc_removes_a_killed_runs_artifact_volumes_and_host_mounts(
    workdir, built_images, docker_client, monkeypatch, store
):
    """A run killed with SIGKILL cleans nothing: its artifact volume and the read-only
    view its consumer would mount (and, when volumes live on this host, the tmpfs and the
    bind mounted for them) stay until gc, which removes them. A SIGINT, in contrast,
    leaves nothing at all."""
    monkeypatch.setenv(VOLUMES_ENV, store)
    path = write_workflow(
        workdir,
        """
        version: 1
        name: killed
        nodes:
          producer:
            command: "echo kept > /out/d/f; sleep 60"
            outputs:
              artifacts: [{name: d, path: /out/d}]
          consumer:
            needs: [producer]
            command: "cat /in/d/f"
            inputs: [{from: producer/d, path: /in/d}]
        """,
    )
    for signum in (signal.SIGINT, signal.SIGKILL):
        proc = start_cli("run", str(path), "--json", "--results", str(workdir / "results.json"))
        try:
            run_id = read_events_until(proc, "node_started")[0]["run_id"]
            wait_for_running_container(docker_client, run_id, "producer")
            mounts = sorted(hostvolumes.ROOT.glob(f"sandbox-orch-{run_id}-*"))
            assert len(mounts) == (2 if store == "host" else 0), mounts  # volume, view
            assert all(os.path.ismount(m) for m in mounts)
        finally:
            code, _out, err = interrupt(proc, signum)
        if signum == signal.SIGINT:
            assert code == 130, err
            assert labelled_leftovers(docker_client, run_id) == []
            assert not any(m.exists() for m in mounts)
            continue
        assert code == -signal.SIGKILL
        left = labelled_leftovers(docker_client, run_id)
        assert len([item for item in left if item.startswith("volume ")]) == 2, left
        assert all(os.path.ismount(m) for m in mounts)

        collected = cli("gc")
        assert collected.returncode == 0, collected.stderr
        assert labelled_leftovers(docker_client, run_id) == []
        assert not any(m.exists() for m in mounts)
