"""The example DAGs on the real engine: order from recorded times, states, skip reasons,
attempts and dependency-aware results."""

import itertools
import json
import shutil
import time

import pytest

from ..conftest import REPO, cli, created_by_process, start_cli

pytestmark = pytest.mark.engine
EXAMPLES = REPO / "configs" / "examples"


def run_example(name, workdir, *args):
    results = workdir / f"{name}.json"
    proc = cli("run", str(EXAMPLES / f"{name}.yaml"), "--ci", "--results", str(results), *args)
    assert results.exists(), proc.stderr
    return proc, json.loads(results.read_text())


def ends_before_starts(results, first, second):
    nodes = results["nodes"]
    assert nodes[first]["finished_at"] <= nodes[second]["started_at"], (first, second)


def test_hello(built_images, workdir):
    proc, results = run_example("hello", workdir)
    assert proc.returncode == 0, proc.stderr
    assert results["nodes"]["whoami"]["stdout_tail"].startswith("uid=10001 gid=10001")
    ends_before_starts(results, "greet", "whoami")
    ends_before_starts(results, "greet", "python")


def test_conditional_dag(built_images, workdir):
    proc, results = run_example("conditional-dag", workdir)
    assert proc.returncode == 0, proc.stderr
    nodes = results["nodes"]
    assert {n: v["status"] for n, v in nodes.items()} == {
        "build": "succeeded",
        "lint": "failed",
        "deploy": "succeeded",
        "more-tests": "skipped",
        "fix-lint": "succeeded",
        "notify-failure": "skipped",
        "report": "succeeded",
    }
    assert nodes["build"]["outputs"] == {"coverage": 91, "version": "1.4.2"}
    assert [m["line"] for m in nodes["lint"]["outputs"]["matches"]] == ["12", "40"]
    assert nodes["deploy"]["condition_result"] is True
    assert nodes["more-tests"]["condition_result"] is False
    assert (
        nodes["more-tests"]["skip_reason"]
        == "condition is false: nodes.build.outputs.coverage <= 80"
    )
    assert nodes["notify-failure"]["skip_reason"] == "condition is false: failure()"
    assert nodes["report"]["condition_result"] is True
    for first, second in [
        ("build", "deploy"),
        ("lint", "fix-lint"),
        ("deploy", "report"),
        ("fix-lint", "report"),
    ]:
        ends_before_starts(results, first, second)
    # dependency-aware metadata
    assert {"from": "lint", "to": "fix-lint", "allow_failure": True} in results["graph"]["edges"]
    assert nodes["report"]["needs"] == ["deploy", "more-tests", "fix-lint", "notify-failure"]
    assert nodes["fix-lint"]["when"].startswith("nodes.lint.exit_code != 0")


def test_fail_fast_halts_and_keep_going_does_not(built_images, workdir):
    proc, results = run_example("fail-fast", workdir)
    assert proc.returncode == 1
    nodes = results["nodes"]
    assert nodes["unit-tests"]["status"] == "failed"
    assert nodes["long-build"]["status"] == "succeeded"  # it was running: it finished
    assert nodes["unit-tests"]["finished_at"] < nodes["long-build"]["finished_at"]
    assert nodes["package"]["status"] == "skipped"
    assert nodes["package"]["skip_reason"] == "not started: fail_fast after 'unit-tests' failed"
    assert nodes["cleanup"]["status"] == "succeeded"  # always() handler still runs
    ends_before_starts(results, "long-build", "cleanup")

    proc, results = run_example("fail-fast", workdir, "--keep-going")
    assert proc.returncode == 1
    assert results["nodes"]["package"]["status"] == "succeeded"


def test_sequence(built_images, workdir):
    proc, results = run_example("sequence", workdir)
    assert proc.returncode == 0, proc.stderr  # the group may fail: continue_on_failure
    nodes = results["nodes"]
    chain = ["checkout", "format", "lint", "typecheck", "build"]
    for first, second in itertools.pairwise(chain):
        ends_before_starts(results, first, second)
    assert nodes["lint"]["status"] == "failed" and nodes["typecheck"]["status"] == "succeeded"
    assert nodes["build"]["needs"] == ["typecheck"]  # the group name means its last member


def test_retry_oom_succeeds_with_more_memory(built_images, workdir):
    proc, results = run_example("retry-oom", workdir)
    assert proc.returncode == 0, proc.stderr
    node = results["nodes"]["hungry"]
    assert node["status"] == "succeeded" and node["attempts"] == 2
    first, second = node["attempt_details"]
    assert first["oom_killed"] is True and first["status"] == "failed"
    assert second["status"] == "succeeded" and second["exit_code"] == 0
    assert first["finished_at"] <= second["started_at"]
    assert "allocated 200 MiB" in node["stdout_tail"]


def test_workflow_timeout_stops_the_run(built_images, workdir):
    workflow = workdir / "slow.yaml"
    workflow.write_text(
        "version: 1\nname: slow\ntimeout: 2s\nnodes:\n"
        "  a: {command: 'sleep 60'}\n  b: {needs: [a], command: [echo, never]}\n"
    )
    results_path = workdir / "r.json"
    proc = cli("run", str(workflow), "--ci", "--results", str(results_path))
    results = json.loads(results_path.read_text())
    assert proc.returncode == 1
    assert results["nodes"]["a"]["status"] == "timed_out"
    assert results["nodes"]["a"]["reason"] == "workflow timeout after 2s"
    assert results["nodes"]["b"]["skip_reason"] == "not started: workflow timeout after 2s"
    assert results["duration_s"] < 15


def test_json_events(built_images, workdir):
    shutil.copy(EXAMPLES / "sequence.yaml", workdir / "seq.yaml")
    proc = cli("run", str(workdir / "seq.yaml"), "--json")
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    finished = [e for e in events if e["event"] == "node_finished"]
    assert {e["node"] for e in finished} == {"checkout", "format", "lint", "typecheck", "build"}
    lint = next(e for e in finished if e["node"] == "lint")
    assert (lint["status"], lint["exit_code"], lint["reason"]) == (
        "failed",
        1,
        "exited with code 1",
    )
    assert events[-1]["status"] == "succeeded"


@pytest.mark.parametrize("fmt", ["text", "json", "mermaid", "dot"])
def test_plan_starts_nothing(docker_client, fmt):
    # Only what this command created counts: other runs share the engine.
    since = time.time() - 1
    proc = start_cli("plan", str(EXAMPLES / "conditional-dag.yaml"), "--format", fmt)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "fix-lint" in out
    assert created_by_process(docker_client, since, proc.pid) == []


def test_what_a_run_creates_is_told_apart_from_other_runs(built_images, docker_client, workdir):
    """The check above can fail: a run's own containers are found by its process id."""
    since = time.time() - 1
    proc = start_cli("run", str(EXAMPLES / "hello.yaml"), "--ci")
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    created = created_by_process(docker_client, since, proc.pid)
    assert created and all(labels["sandbox-orch.node"] for labels in created)
