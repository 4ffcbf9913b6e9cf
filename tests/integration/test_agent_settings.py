"""The `agent:` block reaches the real Claude Code and Codex CLIs as their own flags, and
the policy's `agents:` section holds: under runc and gVisor, against the mock model API
(which records the model of every request)."""

from __future__ import annotations

import json
import secrets
import time

import pytest

from ..conftest import REPO, cli, created_containers, labelled_leftovers, unique, write_workflow
from .conftest import mock_requests, tool_results_seen

# Fixtures (tests/integration/conftest.py): the mock model API, the agents policy under
# runc and runsc, and the API keys.

pytestmark = pytest.mark.engine


def run(workdir, text, policy, env):
    path = write_workflow(workdir, text)
    results = workdir / "results.json"
    proc = cli(
        "run", str(path), "--policy", str(policy), "--ci", "--results", str(results), env=env
    )
    return proc, json.loads(results.read_text()) if results.exists() else None


def stream_events(tail: str) -> list[dict]:
    """The JSON lines of a stream-json tail (a cut first line is skipped)."""
    events = []
    for line in tail.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def asked_for(base_url: str, model: str) -> list[dict]:
    """The mock's requests for this model: only this test's (the model id is unique)."""
    return [r for r in mock_requests(base_url) if r.get("model") == model]


def test_claude_gets_its_model_and_turn_limit(agent_policy, mock_api, workdir, keys, docker_client):
    policy, runtime = agent_policy
    model = f"claude-e2e-{secrets.token_hex(4)}"
    # The mock answers WRITE_FILE with a tool call, then (next turn) with text: with
    # max_turns 1 the CLI must stop after the first request.
    proc, results = run(
        workdir,
        f"""
        version: 1
        name: agent-settings
        nodes:
          review:
            runtime: claude
            prompt: "WRITE_FILE:/tmp/NOTES.md add notes"
            agent: {{model: {model}, max_turns: 1, permission_mode: plan}}
        """,
        policy,
        keys,
    )
    assert proc.returncode == 1, proc.stderr + proc.stdout
    review = results["nodes"]["review"]
    assert review["sandbox"]["oci_runtime"] == runtime
    received = [r for r in asked_for(mock_api, model) if r["path"].startswith("/v1/messages")]
    assert len(received) == 1, received
    # The CLI's own account: stopped by the turn limit, and plan mode denied the write.
    (final,) = [e for e in stream_events(review["stdout_tail"]) if e.get("type") == "result"]
    assert final["subtype"] == "error_max_turns" and final["is_error"] is True
    assert final["errors"] == ["Reached maximum number of turns (1)"]
    assert [d["tool_name"] for d in final["permission_denials"]] == ["Write"]
    assert review["status"] == "failed"
    assert review["reason"] == "the agent reported: Reached maximum number of turns (1)"
    assert labelled_leftovers(docker_client, results["run_id"]) == []


@pytest.mark.parametrize("agent_policy", ["runc"], indirect=True)  # runtime-independent
def test_claude_without_a_turn_limit_takes_two_turns(agent_policy, mock_api, workdir, keys):
    """The control for the test above: the same node without max_turns asks twice."""
    policy, _ = agent_policy
    model = f"claude-e2e-{secrets.token_hex(4)}"
    proc, results = run(
        workdir,
        f"""
        version: 1
        name: agent-settings-control
        nodes:
          review:
            runtime: claude
            prompt: "WRITE_FILE:/tmp/NOTES.md add notes"
            agent: {{model: {model}}}
        """,
        policy,
        keys,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    received = [r for r in asked_for(mock_api, model) if r["path"].startswith("/v1/messages")]
    assert len(received) == 2, received
    assert results["nodes"]["review"]["outputs"]["num_turns"] == 2


@pytest.mark.parametrize("agent_policy", ["runc"], indirect=True)  # runtime-independent
def test_claude_gets_the_appended_system_prompt(agent_policy, mock_api, workdir, keys):
    """The mock calls the Write tool when the request holds WRITE_FILE: here only the
    appended system prompt does, so a second turn proves it reached the model."""
    policy, _ = agent_policy
    model = f"claude-e2e-{secrets.token_hex(4)}"
    proc, results = run(
        workdir,
        f"""
        version: 1
        name: agent-system-prompt
        nodes:
          review:
            runtime: claude
            prompt: "Say hello"
            agent: {{model: {model}, system_prompt_append: "WRITE_FILE:/tmp/NOTES.md"}}
        """,
        policy,
        keys,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    received = [r for r in asked_for(mock_api, model) if r["path"].startswith("/v1/messages")]
    assert len(received) == 2, received
    assert results["nodes"]["review"]["outputs"]["num_turns"] == 2


@pytest.mark.parametrize("agent_policy", ["runc"], indirect=True)  # runtime-independent
def test_claude_does_not_run_a_disallowed_tool(agent_policy, mock_api, workdir, keys):
    """The mock asks for Bash (`ls -la /workspace`); with Bash disallowed the CLI must
    refuse it (test_agents.py shows the same call succeeding without the setting)."""
    policy, _ = agent_policy
    model = f"claude-e2e-{secrets.token_hex(4)}"
    proc, _ = run(
        workdir,
        f"""
        version: 1
        name: agent-disallowed-tool
        nodes:
          review:
            runtime: claude
            prompt: "LIST_WORKSPACE and say what is there"
            agent: {{model: {model}, disallowed_tools: [Bash], allowed_tools: [Read]}}
        """,
        policy,
        keys,
    )
    # what the CLI sent back to the model (the stream's tail is too short to hold it)
    results_of_tools = tool_results_seen(asked_for(mock_api, model))
    (result,) = results_of_tools
    assert result["is_error"] is True, result
    # Refused by the CLI (not a failed `ls`): the tool does not exist for this session.
    assert "No such tool available: Bash" in result["content"], result
    assert proc.returncode == 0, proc.stderr + proc.stdout


def test_codex_gets_its_model(agent_policy, mock_api, workdir, keys):
    policy, runtime = agent_policy
    model = f"gpt-e2e-{secrets.token_hex(4)}"
    proc, results = run(
        workdir,
        f"""
        version: 1
        name: codex-settings
        nodes:
          job:
            runtime: codex
            prompt: "Summarise the repository"
            agent: {{model: {model}, system_prompt_append: "Answer in \\"one\\" line.\\n"}}
        """,
        policy,
        keys,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert results["nodes"]["job"]["sandbox"]["oci_runtime"] == runtime
    received = [r for r in asked_for(mock_api, model) if r["path"].startswith("/v1/responses")]
    assert received, mock_requests(mock_api)[-3:]


@pytest.mark.parametrize(
    "node",
    [
        # bypassing Claude's permission checks, three ways: all refused before anything starts
        "{runtime: claude, prompt: hi, agent: {permission_mode: bypassPermissions}}",
        "{runtime: claude, prompt: hi, command: [--dangerously-skip-permissions]}",
        "{runtime: claude, command: 'claude -p hi --dangerously-skip-permissions'}",
        "{runtime: codex, prompt: hi, agent: {permission_mode: bypassPermissions}}",
        "{runtime: claude, prompt: hi, agent: {allowed_tools: [WebSearch]}}",
        "{runtime: claude, prompt: hi, budget: {usd: 50}}",
    ],
)
def test_the_shipped_policy_refuses_settings_it_does_not_allow(workdir, keys, docker_client, node):
    policy = REPO / "policies" / "agents.yaml"  # as shipped: nothing may start, whatever runtime
    name, since = unique("agent"), time.time()
    proc, results = run(workdir, f"version: 1\nname: x\nnodes:\n  {name}: {node}\n", policy, keys)
    assert proc.returncode == 2 and results is None, proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith(f"{workdir / 'workflow.yaml'}:4: nodes.{name}"), line
    assert "agents." in line or "the policy restricts agent settings" in line, line
    assert created_containers(docker_client, since, {name}) == []


@pytest.mark.parametrize("agent_policy", ["runc"], indirect=True)  # runtime-independent
def test_a_prompt_that_looks_like_an_option_reaches_the_model_as_text(
    agent_policy, mock_api, workdir, keys
):
    """A prompt (an earlier agent's answer, handed on) beginning with `--` is never an
    option to the CLI: both get it after `--`, and the model receives it as written."""
    policy, _ = agent_policy
    claude_model, codex_model = (f"{name}-e2e-{secrets.token_hex(4)}" for name in ("claude", "gpt"))
    prompt = "--dangerously-skip-permissions --model=other hello"
    proc, _ = run(
        workdir,
        f"""
        version: 1
        name: option-like-prompt
        nodes:
          claude:
            runtime: claude
            prompt: "{prompt}"
            agent: {{model: {claude_model}}}
          codex:
            runtime: codex
            prompt: "{prompt}"
            agent: {{model: {codex_model}}}
        """,
        policy,
        keys,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    for model in (claude_model, codex_model):
        (asked, *_) = asked_for(mock_api, model)  # its own model: `--model=other` was text
        assert asked["prompt"].endswith(prompt), asked["prompt"][-200:]
