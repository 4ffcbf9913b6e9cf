"""The real Claude Code and Codex CLIs in their sandboxes, under runc and gVisor, against
a mock model API that runs in its own container (testcontainers) and that the agents
can reach only through the run's egress proxy."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from ..conftest import (
    REPO,
    cli,
    created_containers,
    labelled_leftovers,
    unique,
    write_workflow,
)
from .conftest import (
    ANSWER,
    for_the_mock,
    mock_requests,
    tool_results_seen,
    without_agent_rules,
)

pytestmark = pytest.mark.engine


def run(workdir: Path, text: str, policy: Path, env: dict[str, str]):
    path = write_workflow(workdir, text)
    results = workdir / "results.json"
    proc = cli(
        "run", str(path), "--policy", str(policy), "--ci", "--results", str(results), env=env
    )
    return proc, json.loads(results.read_text()) if results.exists() else None


def assert_nowhere(value: str, *places: str) -> None:
    for place in places:
        assert value not in place


def store_text(workdir: Path) -> str:
    return "".join(
        p.read_text(errors="replace") for p in (workdir / "store").rglob("*") if p.is_file()
    )


def test_claude_reviews_and_its_answer_gates_the_next_node(
    agent_policy, mock_api, workdir, keys, docker_client
):
    policy, runtime = agent_policy
    # The node runs its own command on the claude image (to probe a second host), which
    # a policy that restricts agent settings refuses (test_agent_settings.py): not here.
    policy.write_text(policy.read_text().split("\nagents:")[0] + "\n")
    before = len(mock_requests(mock_api))
    # The review node runs the real CLI headless, then tries another host through the
    # same proxy (it must be refused and recorded); envdump shows another node's view.
    proc, results = run(
        workdir,
        """
        version: 1
        name: agent-review
        nodes:
          review:
            runtime: claude
            command: >-
              claude -p "Review the diff and list risks" --output-format stream-json --verbose
              && node -e "require('http').get({host: '127.0.0.1', port: 3128,
              path: 'http://example.com/'}, r => { console.error('other host:', r.statusCode); })"
          approve:
            needs: [review]
            when: nodes.review.outputs.result.contains("all good") && !nodes.review.outputs.is_error
            command: ["echo", "approved"]
          envdump:
            needs: [review]
            command: "env; cat /proc/1/environ | tr '\\\\0' '\\\\n'"
        """,
        policy,
        keys,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    review, approve = results["nodes"]["review"], results["nodes"]["approve"]
    assert review["sandbox"]["oci_runtime"] == runtime
    assert review["outputs"] == {"result": ANSWER, "is_error": False, "num_turns": 1}
    assert review["usage"]["input_tokens"] == 11 and review["usage"]["output_tokens"] == 7
    assert results["totals"]["usage"]["output_tokens"] == 7
    assert approve["status"] == "succeeded" and approve["condition_result"] is True
    assert "other host: 403" in review["stderr_tail"]
    assert review["violations"] == [
        {"kind": "egress", "detail": "example.com:80 is not granted to node 'review'"}
    ]
    # the key reached the mock, through the proxy ...
    received = mock_requests(mock_api)[before:]
    assert any(r["headers"].get("x-api-key") == keys["ANTHROPIC_API_KEY"] for r in received)
    assert all(r["path"].startswith("/v1/messages") for r in received)
    # ... and appears nowhere else
    key = keys["ANTHROPIC_API_KEY"]
    assert_nowhere(key, json.dumps(results), proc.stdout, proc.stderr, store_text(workdir))
    assert "ANTHROPIC_API_KEY" not in results["nodes"]["envdump"]["stdout_tail"]
    assert labelled_leftovers(docker_client, results["run_id"]) == []


def test_codex_job_output_and_usage_are_in_the_summary(agent_policy, mock_api, workdir, keys):
    policy, runtime = agent_policy
    proc, results = run(
        workdir,
        """
        version: 1
        name: codex-job
        nodes:
          job:
            runtime: codex
            prompt: "Summarise the repository"
        """,
        policy,
        keys,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    job = results["nodes"]["job"]
    assert job["sandbox"]["oci_runtime"] == runtime
    assert job["outputs"] == {"result": ANSWER, "is_error": False, "num_turns": 1}
    usage = job["usage"]
    assert (usage["input_tokens"], usage["output_tokens"], usage["cost_source"]) == (
        23,
        5,
        "priced",
    )
    assert "23 in / 5 out tokens" in proc.stdout  # the summary shows tokens
    assert any(
        r["headers"].get("authorization") == f"Bearer {keys['OPENAI_API_KEY']}"
        for r in mock_requests(mock_api)
    )
    assert_nowhere(keys["OPENAI_API_KEY"], json.dumps(results), proc.stdout, proc.stderr)


def test_single_claude_returns_a_patch_and_leaves_the_workspace_alone(
    agent_policy, mock_api, tmp_path, workdir, keys
):
    policy, _ = agent_policy
    workspace = tmp_path / "project"
    workspace.mkdir()
    (workspace / "app.py").write_text("print('hello')\n")
    before = {p.name: p.read_bytes() for p in workspace.iterdir()}
    proc = cli(
        "single", "claude", "--workspace", str(workspace), "--policy", str(policy), "--ci",
        "--prompt", "WRITE_FILE:/workspace/NOTES.md add notes",
        env=keys,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert {p.name: p.read_bytes() for p in workspace.iterdir()} == before  # untouched
    patch_path = Path(proc.stdout.split("changes: ")[1].split(" (")[0])
    patch = patch_path.read_text()
    assert "+++ b/NOTES.md" in patch and "+written by the mock model" in patch
    subprocess.run(["git", "init", "-q", str(workspace)], check=True)
    applied = subprocess.run(["git", "apply", str(patch_path)], cwd=workspace, capture_output=True)
    assert applied.returncode == 0, applied.stderr
    assert (workspace / "NOTES.md").read_text() == "written by the mock model\n"


def test_an_unreachable_api_fails_the_node_with_the_cli_error(
    agent_policy, mock_api, workdir, keys
):
    policy, _ = agent_policy
    host = "127.0.0.1:9"  # the brokered upstream, where nothing listens: the proxy says 502
    policy.write_text(policy.read_text().replace(mock_api, f"https://{host}"))
    proc, results = run(
        workdir,
        """
        version: 1
        name: unreachable
        fail_fast: false
        nodes:
          review:
            runtime: claude
            prompt: "hello"
            env: {CLAUDE_CODE_MAX_RETRIES: "0"}
            timeout: 2m
          after:
            command: ["echo", "still runs"]
        """,
        policy,
        keys,
    )
    assert proc.returncode == 1, proc.stderr
    review = results["nodes"]["review"]
    assert review["status"] == "failed"
    assert review["stderr_tail"] or review["stdout_tail"]
    assert f"cannot reach {host}" in proc.stdout + proc.stderr
    assert results["nodes"]["after"]["status"] == "succeeded"


def test_agent_without_its_key_is_refused_before_anything_starts(workdir, docker_client):
    policy = REPO / "policies" / "agents.yaml"  # as shipped: the real API hosts
    node, since = unique("review"), time.time()
    proc, results = run(
        workdir,
        f"version: 1\nname: x\nnodes:\n  {node}: {{runtime: claude, prompt: hi}}\n",
        policy,
        {"ANTHROPIC_API_KEY": ""},
    )
    assert proc.returncode == 2 and results is None
    assert "environment variable ANTHROPIC_API_KEY is not set" in proc.stderr
    assert created_containers(docker_client, since, {node}) == []


def test_claude_shell_tool_lists_the_workspace(agent_policy, mock_api, tmp_path, workdir, keys):
    """The real CLI runs the mock model's Bash tool call, `ls -la /workspace`, in the
    sandbox; under gVisor too it must succeed (an old gVisor failed statx here)."""
    policy, runtime = agent_policy
    workspace = tmp_path / "project"
    workspace.mkdir()
    (workspace / "app.py").write_text("print('hello')\n")
    results_path = tmp_path / "single.json"
    before = len(mock_requests(mock_api))
    proc = cli(
        "single", "claude", "--workspace", str(workspace), "--policy", str(policy), "--ci",
        "--prompt", "LIST_WORKSPACE and say what is there",
        "--results", str(results_path),
        env=keys,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    node = json.loads(results_path.read_text())["nodes"]["single"]
    assert node["sandbox"]["oci_runtime"] == runtime
    (result,) = tool_results_seen(mock_requests(mock_api)[before:])
    assert result["is_error"] is False, result
    listing = result["content"]
    assert listing.startswith("total ") and "app.py" in listing, listing
    assert " .\n" in listing or listing.splitlines()[1].endswith(" ."), listing
    assert node["outputs"]["result"] == ANSWER and node["outputs"]["num_turns"] == 2


def test_an_agent_hands_its_answer_to_the_next_and_a_secret_in_it_arrives_redacted(
    mock_api_plain, tmp_path, workdir, keys, docker_client
):
    """`${{ nodes.X.outputs.result }}` in a prompt: the first claude node's answer (the
    mock's) is in the second one's prompt as the model receives it. A node that prints
    its Anthropic key as its answer hands it to a codex node (granted only the OpenAI
    key): the prompt that leaves for the model holds the redaction marker, not the key.
    The environment mode (keys not brokered), which a policy may still choose."""
    mock_api, runtime = mock_api_plain, "runc"
    policy = for_the_mock("agents", runtime, mock_api, tmp_path)
    without_agent_rules(policy)  # `leak` runs its own command line
    tag = secrets.token_hex(6)  # finds this test's requests among the shared mock's
    leak = (
        'printf \'{"type":"result","subtype":"success","is_error":false,'
        '"num_turns":1,"result":"the key is %s"}\\n\' "$ANTHROPIC_API_KEY"'
    )
    proc, results = run(
        workdir,
        f"""
        version: 1
        name: prompt-handoff
        nodes:
          plan:
            runtime: claude
            prompt: "Write a plan ({tag})"
            env: {{ANTHROPIC_BASE_URL: "{mock_api}"}}
          build:
            runtime: claude
            needs: [plan]
            prompt: "Implement this plan ({tag}):\\n${{{{ nodes.plan.outputs.result }}}}"
            env: {{ANTHROPIC_BASE_URL: "{mock_api}"}}
          leak:
            runtime: claude
            command: {json.dumps(leak)}
            env: {{ANTHROPIC_BASE_URL: "{mock_api}"}}
          check:
            runtime: codex
            needs: [leak]
            prompt: "Check ({tag}): ${{{{ nodes.leak.outputs.result }}}}"
            env: {{OPENAI_BASE_URL: "{mock_api}/v1"}}
        """,
        policy,
        keys,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    nodes = results["nodes"]
    assert {name: n["status"] for name, n in nodes.items()} == dict.fromkeys(nodes, "succeeded")
    assert nodes["build"]["sandbox"]["oci_runtime"] == runtime
    assert nodes["build"]["outputs"]["result"] == ANSWER
    prompts = [r["prompt"] for r in mock_requests(mock_api) if tag in (r.get("prompt") or "")]
    assert any(f"Implement this plan ({tag}):\n{ANSWER}" in p for p in prompts), prompts
    handed = [p for p in prompts if f"Check ({tag}):" in p]
    assert handed and all(
        f"Check ({tag}): the key is [REDACTED:ANTHROPIC_API_KEY]" in p for p in handed
    ), handed
    key = keys["ANTHROPIC_API_KEY"]
    assert_nowhere(key, *prompts, json.dumps(results), proc.stdout, proc.stderr)
    assert labelled_leftovers(docker_client, results["run_id"]) == []
