"""Interactive sessions (`single claude` with no prompt), without an engine: the node
`single` builds for one, its refusals, and the container settings it asks for."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import docker
import pytest

from sandbox_orch.backend.memory import MemoryBackend
from sandbox_orch.backend.readback import differences
from sandbox_orch.backend.settings import container_kwargs
from sandbox_orch.errors import InputRefused
from sandbox_orch.execution import NodeRunner
from sandbox_orch.policy import POLICIES_DIR, AgentRules, load_policy
from sandbox_orch.runtimes import CLAUDE_OWN_SETTINGS
from sandbox_orch.single import SingleRequest, single_plan
from sandbox_orch.single.request import NO_TERMINAL, check_session

from ..conftest import REPO
from .helpers import admitted, default_policy

WORKSPACE = Path("/tmp/ws")
API = docker.APIClient(base_url="unix:///nonexistent.sock", version="1.41")


def session(runtime: str, *args: str) -> SingleRequest:
    return SingleRequest(runtime, WORKSPACE, args=args, interactive=True)


@pytest.mark.parametrize(
    ("runtime", "argv"),
    [
        (
            "claude",
            ("sandbox-orch-claude", *CLAUDE_OWN_SETTINGS, "--permission-mode", "acceptEdits"),
        ),
        ("codex", ("sandbox-orch-codex", "--sandbox-orch-session", "--sandbox", "read-only")),
    ],
)
def test_a_session_runs_the_cli_interface_with_the_prompted_defaults(runtime, argv):
    node = single_plan(session(runtime, "--model", "m")).nodes["single"]
    assert node.argv == (*argv, "--model", "m")
    assert "-p" not in node.argv and "exec" not in node.argv
    # Its output is the user's screen: nothing is parsed, so nothing can fail the node.
    assert node.parse.format == "none"
    # The same secrets and API host a prompted run of the preset gets.
    assert node.secrets == node.runtime.secrets and node.egress == node.runtime.egress


def test_no_prompt_and_no_terminal_is_refused_with_a_hint():
    request = dataclasses.replace(session("claude"), interactive=False)
    with pytest.raises(InputRefused) as refused:
        single_plan(request)
    (problem,) = refused.value.problems
    assert problem.message == NO_TERMINAL
    assert "--prompt TEXT" in NO_TERMINAL and "terminal" in NO_TERMINAL


def test_a_prompt_wins_over_a_terminal():
    request = SingleRequest("claude", WORKSPACE, prompt="fix it", interactive=True)
    node = single_plan(request).nodes["single"]
    assert node.argv[:2] == ("claude", "-p") and node.argv[-1] == "fix it"


SESSIONS = load_policy(POLICIES_DIR / "sessions.yaml")
AGENTS = load_policy(POLICIES_DIR / "agents.yaml")


def session_refusal(request: SingleRequest, policy) -> str:
    with pytest.raises(InputRefused) as refused:
        check_session(request, policy)
    (problem,) = refused.value.problems
    return problem.message


def test_the_agents_policy_refuses_a_session_and_names_the_one_that_admits_it():
    """Its budget cannot be metered from a screen."""
    message = session_refusal(session("claude"), AGENTS)
    assert "agents.budget" in message and "--policy sessions" in message
    assert "--prompt TEXT" in message
    # A prompted run is not a session: nothing to refuse.
    assert (
        check_session(dataclasses.replace(session("claude"), interactive=False), AGENTS) is AGENTS
    )


def test_a_policy_without_the_agent_names_the_shipped_one_that_admits_its_session():
    """Not `agents`, which grants the runtime but refuses the session in turn."""
    message = session_refusal(session("claude"), default_policy())
    assert message == (
        "runtime 'claude' is not granted by the policy: for an interactive session, "
        "use --policy sessions (shipped for this), or give --prompt TEXT"
    )


def test_without_a_shipped_policy_admitting_the_session_admission_says_it():
    """No shipped policy admits a codex session (it can switch to full access): the
    runtime's refusal is admission's, as for a prompted run."""
    policy = default_policy()
    assert check_session(session("codex"), policy).runtimes == policy.runtimes
    prompted = dataclasses.replace(session("claude"), interactive=False)
    assert check_session(prompted, policy) is policy


def test_the_sessions_policy_admits_claude_with_its_rules_on_the_command_line():
    admitting = check_session(session("claude"), SESSIONS)
    assert admitting.agents == AgentRules()  # the rules that hold are in the argv below
    assert admitting.secrets == SESSIONS.secrets and admitting.egress == SESSIONS.egress
    argv = single_plan(session("claude"), SESSIONS.agents).nodes["single"].argv
    assert "--disallowedTools=WebFetch" in argv and "--disallowedTools=WebSearch" in argv
    assert "--permission-mode" in argv and "acceptEdits" in argv
    assert not any("dangerously" in arg for arg in argv)


@pytest.mark.parametrize(
    ("runtime", "rules", "args", "said"),
    [
        ("codex", {}, (), "codex can be switched to bypassPermissions"),
        ("claude", {"models": ("claude-sonnet-*",)}, (), "agents.models"),
        ("claude", {"permission_modes": ("plan",)}, (), "switched to acceptEdits, default"),
        ("claude", {"never_allow_tools": ("Web*",)}, (), "exact tool names"),
        ("claude", {}, ("--dangerously-skip-permissions",), "extra CLI arguments"),
    ],
)
def test_a_rule_the_keyboard_could_break_refuses_the_session(runtime, rules, args, said):
    policy = dataclasses.replace(SESSIONS, agents=dataclasses.replace(SESSIONS.agents, **rules))
    assert said in session_refusal(session(runtime, *args), policy)


def test_a_policy_without_agent_rules_admits_any_session():
    for runtime in ("claude", "codex"):
        assert check_session(session(runtime, "--model", "m"), default_policy()).agents == (
            AgentRules()
        )


def test_a_terminal_container_has_a_tty_and_open_stdin_and_both_are_read_back():
    plan, sandboxes = admitted('version: 1\nname: t\nnodes:\n  a: {command: ["true"]}\n')
    spec = NodeRunner(MemoryBackend(), "r", "o").spec(plan.nodes["a"], sandboxes["a"], 1)
    assert spec.tty is False
    plain = container_kwargs(spec, API)
    assert plain["tty"] is False and plain["stdin_open"] is False
    kwargs = container_kwargs(dataclasses.replace(spec, tty=True), API)
    assert kwargs["tty"] is True and kwargs["stdin_open"] is True
    # An engine that dropped either is caught before the container starts.
    attrs = {
        "Config": {"Tty": False, "OpenStdin": True, "Image": kwargs["image"]},
        "HostConfig": {},
    }
    found = differences(kwargs, attrs, {})
    assert "Tty" in found and "OpenStdin" not in found


def test_the_command_without_prompt_or_terminal_exits_2_with_one_line(tmp_path):
    """As a script would run it (stdin and stdout not terminals): refused before anything
    starts (no engine is asked: DOCKER_HOST points nowhere), nothing in the run store."""
    store = tmp_path / "store"
    workspace = tmp_path / "project"
    workspace.mkdir()
    env = {**os.environ, "SANDBOX_ORCH_HOME": str(store), "DOCKER_HOST": "unix:///nonexistent"}
    proc = subprocess.run(
        [sys.executable, "-m", "sandbox_orch", "single", "claude", "--workspace", str(workspace)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"single: --prompt: {NO_TERMINAL}"]
    assert proc.stdout == ""
    assert not (store / "runs").exists()
