"""Agent usage live and budgets, with the real Claude Code and Codex CLIs against the
mock model API (tests/mockapi, scripted by the prompt): usage events arrive while the
node runs, the numbers in the results equal what the mock served, a block budget stops
a node between one answer and the next and keeps its usage, and usage survives
timeouts, retries and error results."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from ..conftest import cli, interrupt, labelled_leftovers, start_cli, write_workflow
from .conftest import mock_requests, without_agent_rules

pytestmark = pytest.mark.engine
RUNC = pytest.mark.parametrize("agent_policy", ["runc"], indirect=True)
BOTH = pytest.mark.parametrize("agent_policy", ["runc", "runsc"], indirect=True)


def run_json(workdir, text, policy, env, *extra):
    path = write_workflow(workdir, text)
    results = workdir / "results.json"
    proc = cli("run", str(path), "--policy", str(policy), "--json", "--results", str(results),
               *extra, env=env)  # fmt: skip
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc, events, json.loads(results.read_text()) if results.exists() else None


def served(requests: list[dict], prompt_marker: str | None = None) -> dict:
    """What the mock answered, summed: the usage each answer reported."""
    totals = dict.fromkeys(
        ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"),
        0,
    )
    for request in requests:
        for key in totals:
            totals[key] += (request.get("served") or {}).get(key, 0)
    return totals


def one_agent(name: str, prompt: str, mock_api: str, *extra: str) -> str:
    """A workflow of one claude node, `agent`, scripted by its prompt (tests/mockapi)."""
    lines = "".join(f"\n    {line}" for line in extra)
    return f"""
version: 1
name: {name}
nodes:
  agent:
    runtime: claude
    prompt: "{prompt}"{lines}
"""


def at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@RUNC
def test_usage_arrives_live_and_equals_what_the_mock_served(agent_policy, mock_api, workdir, keys):
    policy, _ = agent_policy
    before = len(mock_requests(mock_api))
    proc, events, results = run_json(
        workdir,
        one_agent("live-usage", "TOOL_TURNS:3 CACHE:100:20 OUTPUT_TOKENS:500 HOLD:1", mock_api),
        policy,
        keys,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    node = results["nodes"]["agent"]
    usage = node["usage"]
    mine = mock_requests(mock_api)[before:]
    assert len(mine) == 4
    expected = served(mine)
    assert {k: usage[k] for k in expected} == expected == {
        "input_tokens": 44, "output_tokens": 2000,
        "cache_read_input_tokens": 400, "cache_creation_input_tokens": 80,
    }  # fmt: skip
    assert usage["tool_calls"] == {"Bash": 3} and usage["turns"] == 4
    assert usage["models"] and usage["cost_source"] == "reported" and usage["cost_usd"] > 0
    assert results["totals"]["usage"]["total_tokens"] == usage["total_tokens"]
    # live: node_usage events while it ran, growing, before it finished
    live = [e for e in events if e["event"] == "node_usage" and e["node"] == "agent"]
    finished = next(e for e in events if e["event"] == "node_finished" and e["node"] == "agent")
    assert len(live) >= 2, events
    assert all(at(e["at"]) < at(finished["at"]) for e in live)
    outputs = [e["usage"]["output_tokens"] for e in live]
    assert outputs == sorted(outputs) and any(0 < n < 2000 for n in outputs)
    assert any(e["activity"] and e["activity"].startswith("Bash: echo step") for e in live)
    assert finished["answer"] == "MOCK: all good"
    # the run store and `runs list` show the spend
    listing = cli("runs", "list", env={"SANDBOX_ORCH_HOME": str(workdir / "store")})
    assert "COST" in listing.stdout and f"${usage['cost_usd']:.4f}" in listing.stdout


@BOTH
def test_a_block_budget_stops_the_node_between_answers_and_keeps_its_usage(
    agent_policy, mock_api, workdir, keys, docker_client
):
    """Each answer reports 10,000 output tokens ($0.20 at $20/M), then holds 5 s: a $0.50
    budget is crossed by the third answer's usage, and the node must stop there, before
    that answer ends; the mock never sees a fourth request."""
    policy, _ = agent_policy
    before = len(mock_requests(mock_api))
    proc, _events, results = run_json(
        workdir,
        """
        version: 1
        name: budget-stop
        fail_fast: false
        nodes:
          spender:
            runtime: claude
            prompt: "TOOL_TURNS:10 OUTPUT_TOKENS:10000 HOLD:5"
            budget: {usd: 0.5}
            timeout: 5m
          next:
            needs: [spender]
            runtime: claude
            prompt: "hello"
        """,
        policy,
        keys,
    )
    assert proc.returncode == 1, proc.stderr + proc.stdout
    node = results["nodes"]["spender"]
    assert node["status"] == "failed", node
    assert node["reason"] == "budget exceeded: usd 0.60 > 0.50", node["reason"]
    mine = mock_requests(mock_api)[before:]
    assert len(mine) == 3  # stopped before its fourth request
    assert node["usage"]["output_tokens"] == served(mine)["output_tokens"] == 30_000
    assert node["usage"]["cost_usd"] == pytest.approx(0.600132)
    # stopped within the third answer's hold (and removed), not after it
    crossed = mine[-1]["served"]["at"]
    assert at(node["finished_at"]).timestamp() - crossed < 5
    assert results["nodes"]["next"]["status"] == "skipped"
    assert labelled_leftovers(docker_client, results["run_id"]) == []


@RUNC
def test_a_spent_run_budget_skips_the_next_agent_and_a_warn_budget_only_warns(
    agent_policy, mock_api, workdir, keys
):
    policy, _ = agent_policy
    proc, events, results = run_json(
        workdir,
        """
        version: 1
        name: run-budget
        fail_fast: false
        budget: {tokens: 40, turns: {limit: 1, mode: warn}}
        nodes:
          first:
            runtime: claude
            prompt: "hello"
          second:
            needs: [first]
            runtime: claude
            prompt: "hello again"
        """,
        policy,
        keys,
    )
    first, second = results["nodes"]["first"], results["nodes"]["second"]
    assert first["status"] == "succeeded" and first["usage"]["total_tokens"] == 18
    assert proc.returncode == 0, proc.stderr + proc.stdout  # 36 tokens: within 40
    assert second["status"] == "succeeded"
    warnings = [e["reason"] for e in events if e["event"] == "budget_warning"]
    assert warnings == ["budget exceeded (the run's): turns 2 > 1"]
    # the CLI's budget joins the workflow's: the first answer's 11 tokens cross 10
    proc, _events, results = run_json(
        workdir,
        """
        version: 1
        name: run-budget
        fail_fast: false
        budget: {usd: 5}
        nodes:
          first:
            runtime: claude
            prompt: "LIST_WORKSPACE"
          second:
            runtime: claude
            prompt: "hello again"
        """,
        policy,
        keys,
        "--budget-tokens",
        "10",
        "--max-parallel",
        "1",
    )
    first, second = results["nodes"]["first"], results["nodes"]["second"]
    assert first["status"] == "failed"
    # Crossed at the first answer's 11 tokens; the CLI may have printed its next turn's
    # usage in the same read, so the total seen when the crossing is noticed can be more.
    reason, _, spent = first["reason"].partition(" > 10")[0].rpartition(" ")
    assert reason == "budget exceeded (the run's): tokens" and first["reason"].endswith(" > 10")
    assert 11 <= int(spent) <= first["usage"]["total_tokens"], first
    assert second["status"] == "skipped"
    assert second["skip_reason"].startswith("not started: the run's tokens budget is spent")


@RUNC
def test_usage_survives_timeouts_and_adds_up_across_retries(agent_policy, mock_api, workdir, keys):
    policy, _ = agent_policy
    before = len(mock_requests(mock_api))
    proc, _events, results = run_json(
        workdir,
        one_agent(
            "retried",
            "TOOL_TURNS:50 OUTPUT_TOKENS:100 HOLD:1",
            mock_api,
            "timeout: 7s",
            "retries: {limit: 1, on: [timed_out]}",
        ),
        policy,
        keys,
    )
    assert proc.returncode == 1, proc.stderr + proc.stdout
    node = results["nodes"]["agent"]
    assert node["status"] == "timed_out" and node["attempts"] == 2
    per_attempt = [a["usage"]["output_tokens"] for a in node["attempt_details"]]
    assert all(n > 0 for n in per_attempt), node["attempt_details"]
    assert node["usage"]["output_tokens"] == sum(per_attempt)
    # what was streamed before each kill counts: every answer the mock finished sending
    assert sum(per_attempt) <= served(mock_requests(mock_api)[before:])["output_tokens"]


@RUNC
def test_an_error_result_keeps_its_usage_and_its_own_reason(agent_policy, mock_api, workdir, keys):
    policy, _ = agent_policy
    # Its own command line (Claude's own --max-budget-usd): a policy that restricts agent
    # settings refuses that, so this one does not.
    without_agent_rules(policy)
    proc, _events, results = run_json(
        workdir,
        """
        version: 1
        name: errors
        fail_fast: false
        nodes:
          over-its-own-budget:
            runtime: claude
            command: >-
              claude -p "TOOL_TURNS:3 OUTPUT_TOKENS:1000" --output-format stream-json
              --verbose --include-partial-messages --max-budget-usd 0.00001
          refused:
            runtime: claude
            prompt: "MOCK_ERROR"
            env: {CLAUDE_CODE_MAX_RETRIES: "0"}
        """,
        policy,
        keys,
    )
    assert proc.returncode == 1, proc.stderr + proc.stdout
    over, refused = results["nodes"]["over-its-own-budget"], results["nodes"]["refused"]
    assert over["status"] == "failed"
    assert over["reason"] == "the agent reported: Reached maximum budget ($0.00001)"
    assert over["usage"]["output_tokens"] == 1000 and over["usage"]["cost_usd"] > 0
    assert refused["status"] == "failed"
    assert "mock: this request is refused" in refused["reason"], refused["reason"]


@RUNC
def test_ctrl_c_keeps_what_was_streamed(
    agent_policy, mock_api, workdir, keys, monkeypatch, docker_client
):
    """Interrupted while its second answer is held open: the run is cancelled, and the
    usage of what the agent had streamed so far is in the results."""
    policy, _ = agent_policy
    for name, value in keys.items():
        monkeypatch.setenv(name, value)
    path = write_workflow(
        workdir,
        one_agent("interrupted", "TOOL_TURNS:5 OUTPUT_TOKENS:300 HOLD:60", mock_api),
    )
    results = workdir / "results.json"
    proc = start_cli("run", str(path), "--policy", str(policy), "--json", "--results", str(results))
    assert proc.stdout is not None
    for line in proc.stdout:  # the first answer's usage, live: the agent is mid-answer
        event = json.loads(line)
        if event["event"] == "node_usage" and event["usage"]["output_tokens"] >= 300:
            break
    code, _, _ = interrupt(proc)
    assert code == 130
    node = json.loads(results.read_text())["nodes"]["agent"]
    assert node["status"] == "cancelled"
    assert node["usage"]["output_tokens"] == 300 and node["usage"]["tool_calls"] == {"Bash": 1}
    assert node["attempt_details"][0]["usage"]["output_tokens"] == 300
    run_id = json.loads(results.read_text())["run_id"]
    assert labelled_leftovers(docker_client, run_id) == []


@RUNC
def test_ci_prints_a_progress_line_per_running_agent(agent_policy, mock_api, workdir, keys):
    policy, _ = agent_policy
    path = write_workflow(
        workdir,
        one_agent("progress", "TOOL_TURNS:1 OUTPUT_TOKENS:40 HOLD:4", mock_api),
    )
    proc = cli("run", str(path), "--policy", str(policy), "--ci", "--progress-every", "1s",
               env=keys)  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    progress = [line for line in proc.stdout.splitlines() if line.startswith("  running agent [")]
    assert progress, proc.stdout
    # while its first answer is held open: its usage and its tool call so far
    assert any("in / 40 out tokens" in line and "Bash: echo step" in line for line in progress)
    finished = next(line for line in proc.stdout.splitlines() if "succeeded agent" in line)
    assert "2 tool calls" not in finished and "1 tool call" in finished
    assert "    > MOCK: all good" in proc.stdout  # its final answer, under it


@RUNC
def test_a_long_stream_is_counted_exactly_though_its_capture_drops_the_middle(
    agent_policy, mock_api, workdir, keys
):
    """A last answer of 600 KB (its text deltas, the whole message, the result: ~1.8 MB
    of stream-json) under a 1 MiB output limit: the capture keeps a head and a tail,
    the live reader saw everything, so the usage equals what the mock served and the
    final answer is whole."""
    policy, _ = agent_policy
    policy.write_text(policy.read_text().replace("output: 64m", "output: 1m"))
    before = len(mock_requests(mock_api))
    proc, _events, results = run_json(
        workdir,
        one_agent("long", "TOOL_TURNS:2 LONG_ANSWER:600000 OUTPUT_TOKENS:75000", mock_api),
        policy,
        keys,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    node = results["nodes"]["agent"]
    assert node["output_bytes"]["stdout_dropped"] > 0  # the capture did drop the middle
    mine = mock_requests(mock_api)[before:]
    assert node["usage"]["output_tokens"] == served(mine)["output_tokens"] == 3 * 75_000
    assert node["usage"]["tool_calls"] == {"Bash": 2}
    assert len(node["outputs"]["result"]) == 600_000 and node["outputs"]["num_turns"] == 3
