"""Containers prepared ahead of time, on the real engine under runc and gVisor (issue 14,
item 2): a node's container is created and started while its need runs, held by
sandbox-orch-gate; its command runs only after the need ended, and never when the node
does not run, the run is interrupted, or the orchestrator dies.

Each node writes what it saw into the project directory (granted read-write), so the
host reads it after the run: the need's end, the dependent's start, and how long the
dependent's container had existed when its command began (PID 1, the engine's init,
started with the container).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, cli, created_containers, labelled_leftovers, start_cli, unique
from tests.integration.test_exposure import run_cli
from tests.integration.test_hardening import read_events_until, wait_for_running_container

pytestmark = pytest.mark.engine

RUNTIMES = ("runc", "runsc")
# The need's workload: long enough that the dependent is surely held meanwhile.
NEED_SECONDS = 2
# The dependent's probe: when its command began (ns since the epoch), and its
# container's age then (uptime minus PID 1's start, in clock ticks of 1/100 s).
PROBE = (
    "date +%s%N > /w/out/began; "
    "echo $(cut -d' ' -f1 /proc/uptime) $(cut -d' ' -f22 /proc/1/stat) > /w/out/age"
)


def write_policy(directory: Path, runtime: str) -> Path:
    text = (REPO / "policies" / "default.yaml").read_text()
    text = text.replace("oci_runtime: runc", f"oci_runtime: {runtime}")
    text = text.replace("{source: ., modes: [ro]}", "{source: ., modes: [ro, rw]}")
    assert f"oci_runtime: {runtime}" in text and "[ro, rw]" in text
    path = directory / f"policy-{runtime}.yaml"
    path.write_text(text)
    return path


def project(tmp_path: Path) -> Path:
    directory = tmp_path / "project"
    (directory / "out").mkdir(parents=True)
    (directory / "out").chmod(0o777)  # the nodes' user (10001) writes there
    return directory


def workflow(need: str, dependent: str, exit_code: int = 0, when: str = "") -> str:
    condition = f"\n            when: '{when}'" if when else ""
    return f"""
        version: 1
        name: ahead
        defaults: {{runtime: shell, timeout: 2m}}
        nodes:
          {need}:
            mounts: [{{source: ., target: /w, mode: rw}}]
            command: "sleep {NEED_SECONDS}; date +%s%N > /w/out/ended; exit {exit_code}"
          {dependent}:
            needs: [{need}]{condition}
            mounts: [{{source: ., target: /w, mode: rw}}]
            command: "{PROBE}"
    """


def container_age(out: Path) -> float:
    uptime, started_ticks = (out / "age").read_text().split()
    return float(uptime) - int(started_ticks) / 100


def created_at(docker_client, since: float, node: str) -> float:
    events = docker_client.events(
        since=since,
        until=time.time(),
        filters={"type": "container", "event": "create", "label": f"sandbox-orch.node={node}"},
        decode=True,
    )
    return min(event["timeNano"] for event in events) / 1e9


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_held_container_runs_its_command_only_after_its_need_ended(
    tmp_path, built_images, docker_client, runtime
):
    directory = project(tmp_path)
    need, dependent = unique("need"), unique("held")
    since = time.time()
    proc, results = run_cli(
        directory, workflow(need, dependent), write_policy(tmp_path, runtime), tmp_path / "r.json"
    )
    assert results is not None and proc.returncode == 0, proc.stderr
    assert labelled_leftovers(docker_client, results["run_id"]) == []
    out = directory / "out"
    ended = int((out / "ended").read_text()) / 1e9
    began = int((out / "began").read_text()) / 1e9
    assert began >= ended  # its command ran after its need's last act
    # Its container was made while the need ran, and waited: held, not started late.
    assert created_at(docker_client, since, dependent) < ended - 1
    assert container_age(out) > 1, (out / "age").read_text()
    assert results["nodes"][dependent]["status"] == "succeeded"
    assert results["nodes"][dependent]["exit_code"] == 0


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("why", ["need failed", "condition false"])
def test_a_node_that_will_not_run_is_removed_held_its_command_never_run(
    tmp_path, built_images, docker_client, runtime, why
):
    directory = project(tmp_path)
    need, dependent = unique("need"), unique("skipped")
    failing = why == "need failed"
    text = workflow(need, dependent, exit_code=1 if failing else 0, when="" if failing else "false")
    since = time.time()
    proc, results = run_cli(directory, text, write_policy(tmp_path, runtime), tmp_path / "r.json")
    assert results is not None, proc.stderr
    assert results["nodes"][dependent]["status"] == "skipped"
    assert created_containers(docker_client, since, {dependent})  # it was prepared
    assert (directory / "out" / "ended").exists()
    assert not (directory / "out" / "began").exists()  # and its command never ran
    assert labelled_leftovers(docker_client, results["run_id"]) == []


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL])
def test_a_held_container_never_runs_its_command_when_the_run_stops(
    tmp_path, built_images, docker_client, runtime, signum
):
    """Ctrl-C removes it; a killed orchestrator closes its stdin, so its gate ends it
    unrun (exit 125), and gc removes what is left."""
    directory = project(tmp_path)
    need, dependent = unique("need"), unique("held")
    path = directory / "workflow.yaml"
    path.write_text(workflow(need, dependent).replace(f"sleep {NEED_SECONDS}", "sleep 60"))
    policy = write_policy(tmp_path, runtime)
    proc = start_cli("run", str(path), "--json", "--policy", str(policy))
    try:
        run_id = read_events_until(proc, "node_started")[0]["run_id"]
        held = wait_for_running_container(docker_client, run_id, dependent)
    finally:
        proc.send_signal(signum)
        proc.communicate(timeout=60)
    if signum == signal.SIGINT:
        assert proc.returncode == 130
    else:
        assert proc.returncode == -signal.SIGKILL
        assert held.wait(timeout=30)["StatusCode"] == 125  # its gate saw its stdin end
        assert cli("gc").returncode == 0
    assert labelled_leftovers(docker_client, run_id) == []
    assert not (directory / "out" / "began").exists()
