"""A zen config, as zen documents it, run as it is: parallel real Claude Code CLIs in their
sandboxes, under runc and gVisor, against the mock model API (tests/integration/conftest.py's fixtures).
What the sandbox adds is checked too: the workspace is read-only to the agents."""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from sandbox_orch.execution import RUN_LABEL

from ..conftest import cli, created_containers, labelled_leftovers
from .conftest import ANSWER, mock_requests, tool_results_seen
from .test_agents import assert_nowhere

pytestmark = pytest.mark.engine

# zen's format (github.com/netra-systems/zen: examples/code_review.json, ONBOARDING.md,
# zen_orchestrator.py): every field that maps, on three instances, plus a budget section.
CONFIG = {
    "// Description": "Parallel review, as zen's examples/code_review.json",
    "instances": [
        {
            "name": "Security Reviewer",
            "command": "/security-audit all code changes",
            "description": "Reviews the changes; tries to write into the workspace",
            "permission_mode": "acceptEdits",
            "output_format": "stream-json",
            "max_tokens_per_command": 100000,
            "allowed_tools": ["Read", "Write"],
            "session_id": None,
            "clear_history": False,
            "compact_history": False,
            "pre_commands": ["Set context: a security review", "WRITE_FILE:/workspace/pwned.txt"],
        },
        {"prompt": "Summarise the repository", "permission_mode": "default"},
        {"name": "tests", "command": "/runtests all, unit", "max_tokens_per_command": 50000},
    ],
    "budget": {
        "overall_budget": 1000000,
        "overall_cost_budget": 5,
        "enforcement_mode": "block",
        "budget_type": "mixed",
        "disable_visuals": True,
        "command_budgets": {"/runtests": 60000},
    },
}
NODES = {"security-reviewer", "summarise-the-repository", "tests"}


@pytest.mark.parametrize("agent_policy", ["runc"], indirect=True)  # runtime-independent
def test_a_zen_config_runs_as_parallel_claude_nodes(
    agent_policy, mock_api, tmp_path, workdir, keys, docker_client
):
    policy, runtime = agent_policy
    # The config's directory is each node's read-only /workspace, with zen's slash
    # commands in it; the sandbox user (10001) must be able to read it.
    project = tmp_path / "project"
    commands = project / ".claude" / "commands"
    commands.mkdir(parents=True)
    # (the mock answers a request holding LIST_WORKSPACE with a Bash tool call)
    (commands / "runtests.md").write_text("LIST_WORKSPACE, run the tests $ARGUMENTS\n")
    for path in (tmp_path, project / ".claude", commands):
        path.chmod(0o755)
    project.chmod(0o777)  # writable to anyone: only the read-only mount stops a write
    config = project / "review.json"
    config.write_text(json.dumps(CONFIG, indent=2))
    results_path = tmp_path / "results.json"
    before, since = len(mock_requests(mock_api)), time.time()
    args = ("--policy", str(policy), "--ci", "--results", str(results_path))
    proc = cli("run", str(config), *args, env=keys)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    results = json.loads(results_path.read_text())
    assert results["workflow"] == {
        "name": "zen-review",
        "path": str(config),
        "sha256": hashlib.sha256(config.read_bytes()).hexdigest(),
    }
    assert set(results["nodes"]) == NODES and results["graph"]["edges"] == []
    for name in NODES:
        node = results["nodes"][name]
        assert node["status"] == "succeeded", (name, node)
        assert node["runtime"] == "claude" and node["sandbox"]["oci_runtime"] == runtime
        assert node["outputs"]["result"] == ANSWER and node["outputs"]["is_error"] is False
    # pre_commands reached the model in the prompt (the mock's WRITE_FILE asks for a
    # Write tool call); the write failed on the read-only workspace, and nothing
    # reached the host
    seen = tool_results_seen(mock_requests(mock_api)[before:])
    failed = [r for r in seen if r["is_error"]]
    assert len(failed) == 1 and "EROFS" in failed[0]["content"], seen
    assert not (project / "pwned.txt").exists()
    # Claude saw the workspace's slash commands (it tells the model about them, so the
    # mock read LIST_WORKSPACE) and listed the mounted config directory
    listed = [r["content"] for r in seen if not r["is_error"]]
    assert any("review.json" in out and ".claude" in out for out in listed), seen
    # each node called the mock with the key, through its proxy; one container each
    received = mock_requests(mock_api)[before:]
    assert sum(r["headers"].get("x-api-key") == keys["ANTHROPIC_API_KEY"] for r in received) >= 3
    created = created_containers(docker_client, since, NODES)
    ours = [c["sandbox-orch.node"] for c in created if c.get(RUN_LABEL) == results["run_id"]]
    assert sorted(ours) == sorted(NODES)
    assert_nowhere(keys["ANTHROPIC_API_KEY"], json.dumps(results), proc.stdout, proc.stderr)
    assert labelled_leftovers(docker_client, results["run_id"]) == []
