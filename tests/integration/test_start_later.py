"""Starting later on the real engine, under runc and runsc (gVisor): `run --start-at`
waits with a countdown after admission and before anything exists, so Ctrl-C during
the wait exits 130 with nothing created; a node's `start_delay` is interrupted the same
way, its container never created; and a run that waited runs normally."""

from __future__ import annotations

import json
import re
import signal
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import (
    REPO,
    cli,
    created_by_process,
    interrupt,
    labelled_leftovers,
    start_cli,
    unique,
    write_workflow,
)
from tests.integration.test_hardening import read_events_until

pytestmark = pytest.mark.engine

RUNTIMES = ("runc", "runsc")


def policy_for(runtime: str, directory: Path) -> Path:
    default = REPO / "policies" / "default.yaml"
    if runtime == "runc":
        return default
    text = default.read_text()
    assert "oci_runtime: runc" in text
    path = directory / f"default-{runtime}.yaml"
    path.write_text(text.replace("oci_runtime: runc", f"oci_runtime: {runtime}"))
    return path


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_ctrl_c_during_the_start_wait_exits_130_with_nothing_created(
    workdir, built_images, docker_client, runtime
):
    node = unique("never")
    path = write_workflow(
        workdir,
        f"""
        version: 1
        name: later
        nodes:
          {node}: {{command: "echo never"}}
        """,
    )
    policy = policy_for(runtime, workdir)
    results = workdir / "results.json"
    since = time.time()
    proc = start_cli("run", str(path), "--ci", "--policy", str(policy), "--start-at", "2s",
                     "--results", str(results))  # fmt: skip
    try:
        line = proc.stdout.readline()  # the countdown's first line, printed at once
    finally:
        code, out, err = interrupt(proc, signal.SIGINT)
    # 2s from when the option was read; admission and the engine checks came between.
    assert "waiting to start at" in line and re.search(r"\(in [12]s\)$", line), (line, err)
    run_id = line.split()[1].rstrip(":")
    assert code == 130, err
    assert "interrupted" in err and "nothing was started" in err
    assert "run " + run_id not in out  # no run_started, no summary
    assert labelled_leftovers(docker_client, run_id) == []
    assert created_by_process(docker_client, since, proc.pid) == []
    assert not results.exists()
    assert not (workdir / ".sandbox-orch" / "runs" / run_id).exists()
    listed = cli("runs", "list", "--json")
    assert run_id not in listed.stdout


def test_sigterm_during_the_start_wait_exits_130_too(workdir, built_images, docker_client):
    path = write_workflow(workdir, "version: 1\nname: later\nnodes:\n  a: {command: [x]}\n")
    since = time.time()
    proc = start_cli("run", str(path), "--json", "--start-at", "1h")
    try:
        waiting = read_events_until(proc, "run_waiting")[-1]
    finally:
        code, out, err = interrupt(proc, signal.SIGTERM)
    assert code == 130, err
    assert 3590 < waiting["remaining_s"] <= 3600
    assert out == ""  # no further event: the run never started
    assert labelled_leftovers(docker_client, waiting["run_id"]) == []
    assert created_by_process(docker_client, since, proc.pid) == []


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_run_that_waited_starts_on_time_and_runs(workdir, built_images, docker_client, runtime):
    node = unique("later")
    path = write_workflow(
        workdir,
        f"""
        version: 1
        name: later
        nodes:
          {node}: {{command: "echo started"}}
        """,
    )
    policy = policy_for(runtime, workdir)
    proc = cli("run", str(path), "--json", "--policy", str(policy), "--start-at", "2s")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert events[0]["event"] == "run_waiting"
    start_at = parse_time(events[0]["start_at"])
    started = next(e for e in events if e["event"] == "run_started")
    assert parse_time(started["at"]) >= start_at
    assert events[-1]["event"] == "run_finished" and events[-1]["status"] == "succeeded"
    assert labelled_leftovers(docker_client, started["run_id"]) == []


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_ctrl_c_during_a_start_delay_cancels_the_node_before_its_container(
    workdir, built_images, docker_client, runtime
):
    busy, waiting = unique("busy"), unique("waiting")
    path = write_workflow(
        workdir,
        f"""
        version: 1
        name: delayed
        nodes:
          {busy}: {{command: "echo up; sleep 60"}}
          {waiting}: {{command: "echo never", start_delay: 1h}}
        """,
    )
    policy = policy_for(runtime, workdir)
    results = workdir / "results.json"
    since = time.time()
    proc = start_cli("run", str(path), "--json", "--policy", str(policy), "--results", str(results))
    try:
        events = read_events_until(proc, "node_started")
        if not any(e["event"] == "node_delayed" for e in events):
            events += read_events_until(proc, "node_delayed")
    finally:
        code, _out, err = interrupt(proc, signal.SIGINT)
    assert code == 130, err
    delayed = next(e for e in events if e["event"] == "node_delayed")
    assert (delayed["node"], delayed["delay_s"], delayed["reason"]) == (
        waiting,
        3600,
        "start_delay",
    )
    run_id = events[0]["run_id"]
    document = json.loads(results.read_text())
    assert document["nodes"][waiting]["status"] == "cancelled"
    assert document["nodes"][waiting]["attempts"] == 0
    assert document["nodes"][busy]["status"] == "cancelled"
    created = {
        labels["sandbox-orch.node"] for labels in created_by_process(docker_client, since, proc.pid)
    }
    assert waiting not in created and busy in created
    assert labelled_leftovers(docker_client, run_id) == []
