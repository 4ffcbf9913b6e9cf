"""Artifacts on the Kubernetes backend, on kmock's API *emulator* and an *emulated* exec
endpoint (k8s_emulator.py, k8s_exec_server.py): the producer's pod keeps its artifacts
(its `holder` container), where they are measured and archived over the exec API, and
its Job goes only after the copy. The exec endpoint runs each command as a real local
subprocess, with the pod's /held standing for a local directory: the commands, the bytes
and the copy rules are real; the pod's file system and isolation are not."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from typing import Any

import pytest

from sandbox_orch.admission import admit
from sandbox_orch.backend.kubernetes.opening import open_backend
from sandbox_orch.orchestrator import RunOptions, run_plan
from sandbox_orch.policy import load_policy

from .helpers import plan_of
from .k8s_emulator import JOBS, POLICIES, POLICY, SECRETS, SETTINGS, Script, emulated
from .k8s_exec_server import ExecServer

WORKFLOW = """\
    version: 1
    name: k8s-artifacts
    defaults: {runtime: shell}
    nodes:
      make:
        command: [build]
        outputs: {artifacts: [{name: dist, path: /out}]}
"""
REPORT = b"built on an emulated cluster\n"


@pytest.fixture
def held(tmp_path, monkeypatch):
    """The producer pod's /held (its holder's view of the artifacts), here."""
    monkeypatch.setenv("SANDBOX_ORCH_HOME", str(tmp_path / "store"))
    # runc, and a 1 MiB artifact limit: a sparse file above it costs nothing here
    text = POLICY.replace("RUNTIME", "runc").replace("artifacts: 1g", "artifacts: 1m")
    (tmp_path / "policy.yaml").write_text(textwrap.dedent(text))
    (tmp_path / "exec").mkdir()
    root = tmp_path / "held"
    (root / "dist").mkdir(parents=True)
    return root


async def _run(
    tmp_path: Path,
    root: Path,
    script: Script,
    workflow: str = WORKFLOW,
    paths: dict[str, Path] | None = None,
    gate: Any = None,
    path: str = "wf.yaml",
    stop: asyncio.Event | None = None,
):
    """`paths`: more of the pods' paths standing for local directories; `gate`: what was
    written into a consumer pod's deliver gate (FakeKubelet.gate); `path`: where the
    workflow is (its mounts' sources are relative to it); `stop`: the run's Ctrl-C."""
    plan = plan_of(workflow, path)
    sandboxes = admit(plan, load_policy(tmp_path / "policy.yaml"))
    server = ExecServer(tmp_path / "exec", paths={"/held": root, **(paths or {})})
    async with (
        server.serving(),
        emulated({"make": script}, ws_api=server.ws_api()) as (_, cluster, kubelet),
    ):
        if gate is not None:
            kubelet.gate = gate
        # An exec reaches a pod only while its Job is there (the emulator has no Job
        # controller to delete the pod with it): a copy after the Job went would fail.
        server.alive = lambda pod: pod.removesuffix("-x1") in kubelet.live(JOBS)
        backend = await open_backend(SETTINGS, None, plan, sandboxes, cluster=cluster)
        try:
            report = await run_plan(
                plan, load_policy(tmp_path / "policy.yaml"), sandboxes, backend, "r-k8s-art",
                lambda e: None, stop or asyncio.Event(), RunOptions(keep_going=True),
            )  # fmt: skip
        finally:
            await backend.close()
        left = {kind: kubelet.live(kind) for kind in (JOBS, SECRETS, POLICIES)}
        return report, left, server.exchanges


def test_emulator_artifacts_are_measured_and_copied_in_the_holder_then_the_job_goes(tmp_path, held):
    (held / "dist" / "report.txt").write_bytes(REPORT)
    report, left, exchanges = asyncio.run(_run(tmp_path, held, Script(0, log=b"built\n")))
    node = report.results["nodes"]["make"]
    assert node["status"] == "succeeded", node
    (record,) = node["artifacts"]
    assert record["name"] == "dist" and record["complete"] and record["files"] == 1
    assert record["bytes"] == len(REPORT)
    copied = Path(record["path"]) / "report.txt"
    assert copied.read_bytes() == REPORT
    assert record["sha256"] and not node.get("violations")
    # every command of ours ran in the producer's pod's holder, never in the node's
    assert {(e.pod.removesuffix("-x1").endswith("make-1"), e.container) for e in exchanges} == {
        (True, "holder")
    }
    commands = [e.command for e in exchanges]
    assert commands[0][:2] == ["sh", "-c"] and commands[0][-1] == "/held/dist"
    assert commands[-1] == ["tar", "-C", "/held", "-cf", "-", "--", "dist"]
    # the copy came while the Job was there (an exec after it would have been a 404),
    # and then it went, with everything else of the run
    assert all(e.ended == "status" for e in exchanges)
    assert left == {JOBS: {}, SECRETS: {}, POLICIES: {}}


def test_emulator_an_artifact_over_the_limit_fails_the_node_and_is_not_expanded(tmp_path, held):
    # sparse: 2 MiB apparent, nothing written; the policy's artifacts limit is 1 MiB
    with open(held / "dist" / "hole", "wb") as sparse:
        sparse.truncate(2 * 1024**2)
    report, left, _ = asyncio.run(_run(tmp_path, held, Script(0)))
    node = report.results["nodes"]["make"]
    assert node["status"] == "failed"
    assert "apparent size, holes included" in node["reason"]
    (record,) = node["artifacts"]
    assert not record["complete"]
    assert not (Path(record["path"]) / "hole").exists() or (
        (Path(record["path"]) / "hole").stat().st_size <= 1024**2
    )
    assert left == {JOBS: {}, SECRETS: {}, POLICIES: {}}


def test_emulator_a_failed_producers_artifacts_are_still_copied(tmp_path, held):
    (held / "dist" / "log.txt").write_bytes(b"what went wrong\n")
    report, left, _ = asyncio.run(_run(tmp_path, held, Script(2, "Error")))
    node = report.results["nodes"]["make"]
    assert node["status"] == "failed" and node["exit_code"] == 2
    (record,) = node["artifacts"]
    assert (Path(record["path"]) / "log.txt").read_bytes() == b"what went wrong\n"
    assert record["files"] == 1
    assert left == {JOBS: {}, SECRETS: {}, POLICIES: {}}


def test_emulator_a_killed_producer_times_out_its_artifacts_gone_with_its_pod(tmp_path, held):
    """A kill deletes the pod (SIGKILL on a cluster), and its emptyDirs with it: the node
    keeps its own status (timed out, not errored), says why nothing was copied, and
    nothing of the run is left."""
    (held / "dist" / "partial.txt").write_bytes(b"half")
    workflow = WORKFLOW.replace("command: [build]", "command: [build]\n        timeout: 1s")
    report, left, exchanges = asyncio.run(_run(tmp_path, held, Script(None), workflow))
    node = report.results["nodes"]["make"]
    assert node["status"] == "timed_out", node
    assert [v["kind"] for v in node["violations"]] == ["artifact"]
    assert "copy failed" in node["violations"][0]["detail"]
    assert node["artifacts"] == []
    assert exchanges == []  # no pod to ask: nothing ran anywhere
    assert left == {JOBS: {}, SECRETS: {}, POLICIES: {}}


# --- inputs: the producer's copy, delivered into the consumer's pod ----------------------

CONSUMED = (
    WORKFLOW
    + """\
      use:
        needs: [make]
        command: [use]
        inputs: [{from: make/dist, path: /in}]
"""
)


@pytest.fixture
def consumer_pod(tmp_path):
    """The consumer pod's /in (its input's emptyDir) and /gate (its deliver gate), here."""
    (tmp_path / "in").mkdir()
    (tmp_path / "gate").mkdir()
    return {"/in": tmp_path / "in", "/gate": tmp_path / "gate"}


def _gate_file(directory: Path):
    def said(pod: str) -> str | None:
        go = directory / "go"
        return go.read_text() if go.exists() else None

    return said


def test_emulator_a_consumer_gets_its_producers_copy_before_it_runs(tmp_path, held, consumer_pod):
    (held / "dist" / "report.txt").write_bytes(REPORT)
    (held / "dist" / "sub").mkdir()
    (held / "dist" / "sub" / "more.txt").write_bytes(b"more")
    gate = _gate_file(consumer_pod["/gate"])
    report, left, exchanges = asyncio.run(
        _run(tmp_path, held, Script(0), CONSUMED, consumer_pod, gate)
    )
    nodes = report.results["nodes"]
    assert nodes["use"]["status"] == "succeeded", nodes["use"]
    delivered = consumer_pod["/in"]
    assert (delivered / "report.txt").read_bytes() == REPORT
    assert (delivered / "sub" / "more.txt").read_bytes() == b"more"
    ours = [(e.container, e.command) for e in exchanges if "-use-" in e.pod]
    assert ours == [
        ("deliver", ["tar", "-x", "-f", "-", "-C", "/in"]),
        ("deliver", ["sh", "-c", 'echo go > "$1"', "sh", "/gate/go"]),
    ]
    # the producer's copy was made (its commands in its holder) before anything of the
    # consumer's; its Job went without waiting for the consumer
    made = [i for i, e in enumerate(exchanges) if "-make-" in e.pod]
    assert max(made) < min(i for i, e in enumerate(exchanges) if "-use-" in e.pod)
    assert left == {JOBS: {}, SECRETS: {}, POLICIES: {}}


def test_emulator_a_consumer_whose_input_cannot_be_delivered_errors_unrun(
    tmp_path, held, consumer_pod
):
    (held / "dist" / "report.txt").write_bytes(REPORT)
    consumer_pod["/in"].rmdir()  # `tar -C /in` fails in the deliver container
    gate = _gate_file(consumer_pod["/gate"])
    report, left, exchanges = asyncio.run(
        _run(tmp_path, held, Script(0), CONSUMED, consumer_pod, gate)
    )
    use = report.results["nodes"]["use"]
    assert use["status"] == "errored", use
    assert use["reason"].startswith("delivering /in: tar exited 2")
    assert not (consumer_pod["/gate"] / "go").exists()  # never told to go: never ran
    assert [e.command[0] for e in exchanges if "-use-" in e.pod] == ["tar"]
    assert left == {JOBS: {}, SECRETS: {}, POLICIES: {}}


def test_emulator_a_deliver_container_that_ends_unfed_errors_the_consumer(
    tmp_path, held, consumer_pod
):
    report, left, exchanges = asyncio.run(
        _run(tmp_path, held, Script(0), CONSUMED, consumer_pod, gate=lambda pod: "stop")
    )
    use = report.results["nodes"]["use"]
    assert use["status"] == "errored", use
    assert use["reason"] == "its deliver container ended (exit 1) unfed"
    assert not [e for e in exchanges if "-use-" in e.pod]  # nothing sent into it
    assert left == {JOBS: {}, SECRETS: {}, POLICIES: {}}


def test_emulator_a_deliver_container_failing_when_told_to_go_errors_the_consumer(
    tmp_path, held, consumer_pod
):
    go = consumer_pod["/gate"] / "go"
    report, left, exchanges = asyncio.run(
        _run(
            tmp_path,
            held,
            Script(0),
            CONSUMED,
            consumer_pod,
            lambda pod: "?" if go.exists() else None,
        )
    )
    use = report.results["nodes"]["use"]
    assert use["status"] == "errored", use
    assert use["reason"] == "its deliver container exited 1 when told to go"
    assert [e.command[0] for e in exchanges if "-use-" in e.pod] == ["tar", "sh"]
    assert left == {JOBS: {}, SECRETS: {}, POLICIES: {}}


def test_emulator_ctrl_c_during_a_delivery_leaves_nothing(tmp_path, held, consumer_pod):
    """Interrupted while its deliver container holds its pod: the consumer is cancelled,
    never run, and its Job goes with everything else of the run."""
    stop = asyncio.Event()

    def held_until_interrupted(pod: str) -> None:
        stop.set()  # Ctrl-C, while the kubelet holds the pod in its deliver container
        return None

    report, left, _ = asyncio.run(
        _run(tmp_path, held, Script(0), CONSUMED, consumer_pod, held_until_interrupted, stop=stop)
    )
    assert report.results["nodes"]["make"]["status"] == "succeeded"
    use = report.results["nodes"]["use"]
    assert use["status"] == "cancelled", use
    assert use["attempts"] == 1  # its Job was made and released: the kubelet held its pod
    assert report.status.value == "cancelled"
    assert left == {JOBS: {}, SECRETS: {}, POLICIES: {}}
