"""A run's life on the real engine: bounded output, clean-up after every ending, the
contract's exit codes, engine errors, results documents and retries."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from sandbox_orch.backend import BackendError
from sandbox_orch.backend.docker import DockerBackend, connect
from sandbox_orch.orchestrator import RunOptions, prepare, run_plan
from sandbox_orch.policy import DEFAULT_POLICY, load_policy
from sandbox_orch.store import new_run_id
from tests.conftest import (
    cli,
    created_containers,
    interrupt,
    labelled_leftovers,
    run_workflow,
    start_cli,
    unique,
    wait_for_peak_rss,
    write_workflow,
)
from tests.integration.test_hardening import read_events_until, wait_for_running_container

pytestmark = pytest.mark.engine

MIB = 1024 * 1024
ISO = "%Y-%m-%dT%H:%M:%S.%f%z"


def parse_time(text: str) -> datetime:
    return datetime.strptime(text.replace("Z", "+0000"), ISO)


# --- output ------------------------------------------------------------------------------


def test_flood_of_output_is_bounded(workdir, built_images, docker_client):
    stdout_bytes, stderr_bytes = 200_000_000, 1_000_000
    limit = load_policy(DEFAULT_POLICY).limits.output  # per stream
    path = write_workflow(
        workdir,
        f"""
        version: 1
        name: flood
        nodes:
          flood:
            timeout: 2m
            command: "head -c {stdout_bytes} /dev/zero | tr '\\\\0' a;
                      head -c {stderr_bytes} /dev/zero | tr '\\\\0' b >&2"
        """,
    )
    results_path = workdir / "results.json"
    proc = start_cli("run", str(path), "--ci", "--results", str(results_path), measured=True)
    peak_rss = wait_for_peak_rss(proc)
    out, err = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == 0, out + err
    results = json.loads(results_path.read_text())
    assert labelled_leftovers(docker_client, results["run_id"]) == []
    node = results["nodes"]["flood"]
    assert node["status"] == "succeeded"
    assert node["output_bytes"] == {
        "stdout": stdout_bytes,
        "stderr": stderr_bytes,
        "stdout_dropped": stdout_bytes - limit,
        "stderr_dropped": 0,  # under the limit: kept whole
    }
    assert 0 < len(node["stdout_tail"]) <= 4096 and set(node["stdout_tail"]) == {"a"}
    assert 0 < len(node["stderr_tail"]) <= 4096 and set(node["stderr_tail"]) == {"b"}
    assert peak_rss < 200 * MIB, f"the orchestrator peaked at {peak_rss / MIB:.0f} MiB"


def flood_workflow(nodes: int, size: int) -> str:
    lines = ["version: 1", "name: chatty", "defaults: {timeout: 2m}", "nodes:"]
    lines += [
        f"  chatty-{i}: {{command: \"head -c {size} /dev/zero | tr '\\\\0' a\"}}"
        for i in range(nodes)
    ]
    return "\n".join(lines) + "\n"


def test_chatty_nodes_in_sequence_do_not_accumulate_memory(workdir, built_images, docker_client):
    nodes, size = 8, 50_000_000
    path = write_workflow(workdir, flood_workflow(nodes, size))
    results_path = workdir / "results.json"
    proc = start_cli(
        "run", str(path), "--ci", "--max-parallel", "1", "--results", str(results_path),
        measured=True,
    )  # fmt: skip
    peak_rss = wait_for_peak_rss(proc)
    assert proc.returncode == 0, proc.stdout.read() + proc.stderr.read()
    results = json.loads(results_path.read_text())
    assert labelled_leftovers(docker_client, results["run_id"]) == []
    assert [n["output_bytes"]["stdout"] for n in results["nodes"].values()] == [size] * nodes
    # One node at a time: the peak should be that of one flooding node, whatever their number.
    assert peak_rss < 200 * MIB, f"the orchestrator peaked at {peak_rss / MIB:.0f} MiB"


# --- clean-up after every ending ---------------------------------------------------------


def test_success_leaves_nothing(workdir, built_images, docker_client):
    first, second, third = unique("first"), unique("second"), unique("third")
    since = time.time()
    result = run_workflow(
        workdir,
        f"""
        version: 1
        name: fine
        nodes:
          {first}: {{command: "echo one"}}
          {second}: {{needs: [{first}], command: ["echo", "two"]}}
          {third}: {{needs: [{first}], runtime: python, command: ["python", "-c", "print(3)"]}}
        """,
    )
    assert result.exit_code == 0, result.stderr
    assert result.results["status"] == "succeeded"
    outputs = {name: result.node(name)["stdout_tail"] for name in (first, second, third)}
    assert outputs == {first: "one\n", second: "two\n", third: "3\n"}
    # Each node had its own container, and none of them is left.
    created = created_containers(docker_client, since, {first, second, third})
    assert sorted(c["sandbox-orch.node"] for c in created) == sorted([first, second, third])
    assert {c["sandbox-orch.run"] for c in created} == {result.results["run_id"]}
    assert labelled_leftovers(docker_client, result.results["run_id"]) == []


def test_failure_skips_dependents_and_leaves_nothing(workdir, built_images, docker_client):
    result = run_workflow(
        workdir,
        """
        version: 1
        name: broken
        nodes:
          build: {command: "echo building; exit 1"}
          test: {needs: [build], command: "echo never"}
          ship: {needs: [test], command: "echo never"}
        """,
    )
    assert result.exit_code == 1, result.stderr
    assert result.results["status"] == "failed"
    build, test, ship = (result.node(n) for n in ("build", "test", "ship"))
    assert (build["status"], build["exit_code"]) == ("failed", 1)
    assert build["stdout_tail"] == "building\n"
    assert test["status"] == "skipped" and "'build'" in test["skip_reason"]
    assert ship["status"] == "skipped" and "'test'" in ship["skip_reason"]
    assert test["attempts"] == ship["attempts"] == 0
    assert labelled_leftovers(docker_client, result.results["run_id"]) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_cancels_and_leaves_nothing(workdir, built_images, docker_client, signum):
    path = write_workflow(
        workdir,
        """
        version: 1
        name: interrupted
        nodes:
          slow: {command: "sleep 60"}
          after: {needs: [slow], command: "echo never"}
          last: {needs: [after], command: "echo never"}
        """,
    )
    results_path = workdir / "results.json"
    proc = start_cli("run", str(path), "--json", "--results", str(results_path))
    clock = time.monotonic()
    try:
        run_id = read_events_until(proc, "node_started")[0]["run_id"]
        wait_for_running_container(docker_client, run_id, "slow")
        clock = time.monotonic()
    finally:
        code, out, err = interrupt(proc, signum)
    took = time.monotonic() - clock
    assert code == 130, err
    assert took < 15, f"the interrupted run took {took:.1f}s to end"
    assert labelled_leftovers(docker_client, run_id) == []
    results = json.loads(results_path.read_text())
    assert results["status"] == "cancelled"
    assert {n: v["status"] for n, v in results["nodes"].items()} == {
        "slow": "cancelled",
        "after": "cancelled",
        "last": "cancelled",
    }
    events = [json.loads(line) for line in out.splitlines()]
    assert events[-1]["event"] == "run_finished" and events[-1]["status"] == "cancelled"


def test_interrupted_node_keeps_what_it_did(workdir, built_images, docker_client):
    path = write_workflow(
        workdir,
        """
        version: 1
        name: interrupted
        nodes:
          slow: {command: "echo got this far; sleep 60"}
        """,
    )
    results_path = workdir / "results.json"
    proc = start_cli("run", str(path), "--json", "--results", str(results_path))
    try:
        run_id = read_events_until(proc, "node_started")[0]["run_id"]
        container = wait_for_running_container(docker_client, run_id, "slow")
        # Follow its output until the line arrives (bounded by the node's own sleep).
        printed = b""
        for chunk in container.logs(stream=True, follow=True):
            printed += chunk
            if b"got this far" in printed:
                break
        assert b"got this far" in printed
    finally:
        code, _out, err = interrupt(proc, signal.SIGINT)
    assert code == 130, err
    assert labelled_leftovers(docker_client, run_id) == []
    node = json.loads(results_path.read_text())["nodes"]["slow"]
    assert node["status"] == "cancelled"
    assert node["attempts"] == 1
    assert node["started_at"] is not None
    assert node["stdout_tail"] == "got this far\n"


# --- exit codes --------------------------------------------------------------------------

# (workflow text with NODE for a unique node name, field expected per problem, message)
REFUSED = {
    "unknown-key": (
        """
        version: 1
        name: refused
        nodes:
          NODE:
            command: "true"
            privileged: true
        """,
        [("nodes.NODE.privileged", "unknown key")],
    ),
    "cycle": (
        """
        version: 1
        name: refused
        nodes:
          NODE:
            command: "true"
            needs: [NODE-b]
          NODE-b:
            command: "true"
            needs: [NODE]
        """,
        [(r"nodes\.NODE(-b)?\.needs", "dependency cycle")],
    ),
    "unknown-runtime": (
        """
        version: 1
        name: refused
        nodes:
          NODE:
            runtime: cobol
            command: "true"
        """,
        [("nodes.NODE.runtime", "unknown runtime 'cobol'")],
    ),
    "invalid-yaml": (
        """
        version: 1
        name: refused
        nodes:
          NODE: [
            command: "true"
        """,
        [(None, "invalid YAML")],
    ),
    "two-problems": (
        """
        version: 1
        name: refused
        nodes:
          NODE:
            command: "true"
            privileged: true
          NODE-b:
            command: "true"
            network_mode: host
        """,
        [("nodes.NODE.privileged", "unknown key"), ("nodes.NODE-b.network_mode", "unknown key")],
    ),
}
PROBLEM_LINE = re.compile(
    r"^(?:sandbox-orch: )?(?P<file>/.+?):(?P<line>\d+): (?:(?P<field>[\w.\[\]-]+): )?(?P<msg>.+)$"
)


def expected_line(text: str, field: str | None) -> int | None:
    """The line of the file where the field's last key is written (None: not checkable)."""
    if field is None or "\\" in field:
        return None
    key = field.rsplit(".", 1)[-1]
    lines = text.splitlines()
    owner = field.split(".")[1]
    start = next(i for i, line in enumerate(lines) if line.strip() == f"{owner}:")
    return next(i + 1 for i, line in enumerate(lines) if i > start and f"{key}:" in line)


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_workflow_exits_2_one_line_per_problem(workdir, docker_client, case):
    template, problems = REFUSED[case]
    name = unique("refused")
    path = write_workflow(workdir, template.replace("NODE", name))
    text = path.read_text()
    since = time.time()
    proc = cli("run", str(path), "--ci")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == len(problems), proc.stderr
    for line, (field, message) in zip(lines, problems, strict=True):
        match = PROBLEM_LINE.match(line)
        assert match, line
        assert match["file"] == str(path)
        assert 1 <= int(match["line"]) <= len(text.splitlines()) + 1
        if field is None:
            assert match["field"] is None
        else:
            field = field.replace("NODE", name)
            assert re.fullmatch(field, match["field"]), line
            assert match["field"] in line
            expected = expected_line(text, match["field"].replace("\\", ""))
            assert int(match["line"]) == expected, line
        assert message in match["msg"], line
    assert created_containers(docker_client, since, {name, f"{name}-b"}) == []


def test_single_refusal_line_starts_with_the_file(workdir):
    path = write_workflow(
        workdir,
        """
        version: 1
        name: refused
        nodes:
          one:
            command: "true"
            privileged: true
        """,
    )
    proc = cli("validate", str(path))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"{path}:7: nodes.one.privileged: unknown key"]


def wide_policy(directory: Path) -> Path:
    """The default policy, granting every sandbox-orch image to custom runtimes."""
    text = DEFAULT_POLICY.read_text()
    widened = re.sub(r"(?m)^images: .*$", 'images: ["sandbox-orch/*"]', text)
    assert widened != text
    path = directory / "policy.yaml"
    path.write_text(widened)
    return path


def test_missing_image_exits_3_and_says_how_to_build(workdir, built_images, docker_client):
    name = unique("ghost")
    path = write_workflow(
        workdir,
        f"""
        version: 1
        name: missing-image
        runtimes:
          ghost: {{image: sandbox-orch/does-not-exist}}
        nodes:
          {name}: {{runtime: ghost, command: ["true"]}}
        """,
    )
    since = time.time()
    proc = cli("run", str(path), "--ci", "--policy", str(wide_policy(workdir)))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "sandbox-orch/does-not-exist" in proc.stderr
    assert "sandbox-orch images build" in proc.stderr
    assert created_containers(docker_client, since, {name}) == []


def test_no_engine_exits_3_and_says_how_to_start_one(workdir):
    path = write_workflow(
        workdir,
        """
        version: 1
        name: no-engine
        nodes:
          a: {command: "true"}
        """,
    )
    proc = cli("run", str(path), "--ci", env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "no Docker engine answers" in proc.stderr
    assert "start one" in proc.stderr and "DOCKER_HOST" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- engine errors -----------------------------------------------------------------------


def test_engine_refusal_mid_run_is_errored(workdir, built_images, docker_client):
    """Docker refuses a memory limit under 6 MB at create: an engine failure, not the
    command's. The node is errored, its dependent skipped, its sibling still succeeds."""
    tiny, fine = unique("tiny"), unique("fine")
    since = time.time()
    result = run_workflow(
        workdir,
        f"""
        version: 1
        name: engine-error
        fail_fast: false
        nodes:
          {tiny}: {{resources: {{memory: 1m}}, command: "echo never"}}
          after: {{needs: [{tiny}], command: "echo never"}}
          {fine}: {{command: "echo fine"}}
        """,
    )
    assert result.exit_code == 3, result.stdout + result.stderr
    assert result.results["status"] == "errored"
    node = result.node(tiny)
    assert node["status"] == "errored"
    assert node["exit_code"] is None
    assert "memory" in node["reason"].lower()  # the engine's own words
    assert result.node("after")["status"] == "skipped"
    assert repr(tiny) in result.node("after")["skip_reason"]
    assert result.node(fine)["status"] == "succeeded"
    assert result.node(fine)["stdout_tail"] == "fine\n"
    # The engine refused the create itself: only the sibling ever had a container.
    created = created_containers(docker_client, since, {tiny, fine})
    assert [c["sandbox-orch.node"] for c in created] == [fine]
    assert labelled_leftovers(docker_client, result.results["run_id"]) == []


class FailingStart(DockerBackend):
    """The real engine, except that starting one node's container fails."""

    def __init__(self, doomed: str) -> None:
        super().__init__(connect())
        self.doomed = doomed
        self.created: dict[str, str] = {}

    async def create(self, spec: Any) -> str:
        container_id = await super().create(spec)
        self.created[spec.labels["sandbox-orch.node"]] = container_id
        return container_id

    async def start(self, container_id: str, sink: Any) -> None:
        if container_id == self.created.get(self.doomed):
            raise BackendError("injected: the engine could not start the container")
        await super().start(container_id, sink)


def test_engine_failure_after_create_removes_the_container(workdir, built_images, docker_client):
    path = write_workflow(
        workdir,
        """
        version: 1
        name: start-fails
        fail_fast: false
        nodes:
          doomed: {command: "echo never"}
          fine: {command: "echo fine"}
        """,
    )
    prepared = prepare(path, DEFAULT_POLICY)
    backend = FailingStart("doomed")
    run_id, events = new_run_id(), []

    async def go() -> Any:
        try:
            return await run_plan(
                prepared.plan,
                prepared.policy,
                prepared.sandboxes,
                backend,
                run_id,
                events.append,
                asyncio.Event(),
                RunOptions(results_file=workdir / "results.json"),
            )
        finally:
            await backend.close()

    report = asyncio.run(go())
    assert set(backend.created) == {"doomed", "fine"}  # both really reached the engine
    assert report.status == "errored"
    assert report.cleanup_failures == []
    nodes = report.results["nodes"]
    assert nodes["doomed"]["status"] == "errored"
    assert "injected" in nodes["doomed"]["reason"]
    assert nodes["fine"]["status"] == "succeeded"
    assert json.loads((workdir / "results.json").read_text()) == report.results
    assert labelled_leftovers(docker_client, run_id) == []


# --- validate, results -------------------------------------------------------------------


def test_validate_starts_nothing(workdir, built_images, docker_client):
    name = unique("checked")
    path = write_workflow(
        workdir,
        f"""
        version: 1
        name: checked
        nodes:
          {name}: {{command: "echo hi"}}
          {name}-b: {{needs: [{name}], command: "echo hi"}}
        """,
    )
    since = time.time()
    proc = cli("validate", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "valid" in proc.stdout
    proc = cli("validate", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["valid"] is True and summary["nodes"] == [name, f"{name}-b"]
    assert created_containers(docker_client, since, {name, f"{name}-b"}) == []
    assert not (workdir / "store" / "runs").exists()


RESULT_KEYS = {
    "schema", "run_id", "status", "workflow", "policy", "started_at", "finished_at",
    "duration_s", "graph", "nodes", "totals",
}  # fmt: skip
NODE_KEYS = {
    "status", "exit_code", "attempts", "started_at", "finished_at", "duration_s", "needs",
    "when", "condition_result", "skip_reason", "runtime", "image", "image_id", "outputs",
    "stdout_tail", "stderr_tail", "oom_killed", "usage", "artifacts", "sandbox", "violations",
}  # fmt: skip


def test_results_file_and_run_store_hold_the_same_document(workdir, built_images, docker_client):
    result = run_workflow(
        workdir,
        """
        version: 1
        name: documented
        fail_fast: false
        nodes:
          make: {command: "echo made"}
          check: {needs: [make], command: "echo checked >&2; exit 4", continue_on_failure: true}
          report:
            needs: [make, {node: check, allow_failure: true}]
            runtime: python
            command: ["python", "-c", "print('reported')"]
        """,
    )
    assert result.exit_code == 0, result.stderr  # the failure was allowed
    document = result.results
    run_id = document["run_id"]
    stored = json.loads((workdir / "store" / "runs" / run_id / "results.json").read_text())
    assert stored == document
    assert labelled_leftovers(docker_client, run_id) == []

    assert set(document) >= RESULT_KEYS
    assert document["schema"] == "sandbox-orch/run-result@1"
    assert document["status"] == "succeeded"
    workflow_path = workdir / "workflow.yaml"
    assert document["workflow"] == {
        "name": "documented",
        "path": str(workflow_path),
        "sha256": hashlib.sha256(workflow_path.read_bytes()).hexdigest(),
    }
    assert document["policy"]["name"] == "default"
    assert document["policy"]["sha256"] == hashlib.sha256(DEFAULT_POLICY.read_bytes()).hexdigest()
    started, finished = parse_time(document["started_at"]), parse_time(document["finished_at"])
    assert started <= finished
    assert document["duration_s"] == pytest.approx((finished - started).total_seconds(), abs=0.01)
    assert sorted(document["graph"]["nodes"]) == ["check", "make", "report"]
    assert sorted(document["graph"]["edges"], key=lambda e: (e["from"], e["to"])) == [
        {"from": "check", "to": "report", "allow_failure": True},
        {"from": "make", "to": "check", "allow_failure": False},
        {"from": "make", "to": "report", "allow_failure": False},
    ]

    nodes = document["nodes"]
    assert set(nodes) == {"make", "check", "report"}
    for name, node in nodes.items():
        assert set(node) >= NODE_KEYS, name
        assert parse_time(node["started_at"]) <= parse_time(node["finished_at"])
        assert node["sandbox"]["cap_drop"] == ["ALL"]
        assert node["sandbox"]["read_only_rootfs"] is True
    assert (nodes["check"]["status"], nodes["check"]["exit_code"]) == ("failed", 4)
    assert nodes["check"]["stderr_tail"] == "checked\n"
    assert nodes["report"]["needs"] == ["make", "check"]
    assert nodes["report"]["stdout_tail"] == "reported\n"
    assert nodes["report"]["image"] == "sandbox-orch/python"
    assert nodes["report"]["image_id"] == docker_client.images.get("sandbox-orch/python").id
    assert nodes["make"]["image_id"] == docker_client.images.get("sandbox-orch/shell").id
    totals = document["totals"]
    assert (totals["succeeded"], totals["failed"], totals["skipped"]) == (2, 1, 0)


# --- retries -----------------------------------------------------------------------------


def test_retries_attempt_exactly_limit_plus_one(workdir, built_images, docker_client):
    flaky, slow = unique("flaky"), unique("slow")
    since = time.time()
    result = run_workflow(
        workdir,
        f"""
        version: 1
        name: retried
        fail_fast: false
        nodes:
          {flaky}:
            command: "echo trying; exit 7"
            retries: {{limit: 2, on: [failed]}}
          {slow}:
            command: "sleep 60"
            timeout: 1s
            retries: {{limit: 2, on: [failed]}}
        """,
    )
    assert result.exit_code == 1, result.stderr
    node = result.node(flaky)
    assert node["status"] == "failed" and node["exit_code"] == 7
    assert node["attempts"] == 3
    details = node["attempt_details"]
    assert [(d["attempt"], d["status"], d["exit_code"]) for d in details] == [
        (1, "failed", 7),
        (2, "failed", 7),
        (3, "failed", 7),
    ]
    # A timeout is not a failure: `on: [failed]` does not retry it.
    assert result.node(slow)["status"] == "timed_out"
    assert result.node(slow)["attempts"] == 1
    # Each attempt ran in a fresh container.
    created = created_containers(docker_client, since, {flaky, slow})
    attempts = sorted((c["sandbox-orch.node"], c["sandbox-orch.attempt"]) for c in created)
    assert attempts == sorted([(flaky, "1"), (flaky, "2"), (flaky, "3"), (slow, "1")])
    assert labelled_leftovers(docker_client, result.results["run_id"]) == []
