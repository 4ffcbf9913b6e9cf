"""The policy's `agents:` section: parsing, and admission's refusals of agent nodes and
budgets that break it (each with the workflow's line and the policy's rule)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sandbox_orch.admission import admit
from sandbox_orch.agents.admission import _image_name, run_budget
from sandbox_orch.agents.budgets import Budget
from sandbox_orch.errors import InputRefused
from sandbox_orch.orchestrator import prepare
from sandbox_orch.policy import POLICIES_DIR, AgentRules, Policy, load_policy

from .helpers import plan_of

ENV = {"ANTHROPIC_API_KEY": "k-123456", "OPENAI_API_KEY": "k-654321"}
AGENTS = POLICIES_DIR / "agents.yaml"


def policy_with(tmp_path: Path, agents: str) -> Policy:
    """policies/agents.yaml with its `agents:` section replaced."""
    text = AGENTS.read_text().split("\nagents:")[0]
    path = tmp_path / "policy.yaml"
    path.write_text(text + "\nagents:\n" + textwrap.indent(textwrap.dedent(agents), "  "))
    return load_policy(path)


def refusals(text: str, policy: Policy) -> list[str]:
    with pytest.raises(InputRefused) as caught:
        admit(plan_of(text), policy, environ=ENV)
    return [str(p) for p in caught.value.problems]


def node(body: str, top: str = "") -> str:
    body = textwrap.indent(textwrap.dedent(body), "    ")
    return f"version: 1\nname: x\n{top}nodes:\n  a:\n{body}"


# ---------------------------------------------------------------- parsing


def test_the_section_is_parsed(tmp_path):
    policy = policy_with(
        tmp_path,
        """
        models: ["claude-sonnet-*", gpt-5]
        permission_modes: [plan, acceptEdits]
        never_allow_tools: [Bash, "mcp__*"]
        budget: {usd: 5, tokens: {limit: 1000000, mode: warn}}
        """,
    )
    rules = policy.agents
    assert rules.models == ("claude-sonnet-*", "gpt-5")
    assert rules.permission_modes == ("plan", "acceptEdits")
    assert rules.never_allow_tools == ("Bash", "mcp__*")
    assert rules.budget == Budget(usd=5, tokens={"limit": 1_000_000, "mode": "warn"})
    assert rules.restricts_settings


def test_without_the_section_nothing_is_restricted(tmp_path):
    policy = load_policy(POLICIES_DIR / "default.yaml")
    assert policy.agents == AgentRules() and not policy.agents.restricts_settings
    assert not policy_with(tmp_path, "budget: {usd: 1}").agents.restricts_settings


# A bad `agents:` section: tests/corpus/refused/policy/agents-*.yaml


# ---------------------------------------------------------------- admission: settings


def test_a_model_outside_the_list_is_refused(tmp_path):
    policy = policy_with(tmp_path, "models: ['claude-sonnet-*']")
    ok = node("runtime: claude\nprompt: go\nagent: {model: claude-sonnet-4-5}\n")
    assert admit(plan_of(ok), policy, environ=ENV)["a"]
    (line,) = refusals(
        node("runtime: claude\nprompt: go\nagent:\n  model: claude-opus-4\n"), policy
    )
    assert line == (
        "wf.yaml:8: nodes.a.agent.model: node 'a': model 'claude-opus-4' is not allowed by "
        "the policy (agents.models: claude-sonnet-*)"
    )


def test_with_a_model_list_a_node_must_name_its_model(tmp_path):
    policy = policy_with(tmp_path, "models: [gpt-5]")
    (line,) = refusals(node("runtime: codex\nprompt: go\n"), policy)
    assert line.startswith("wf.yaml:4: nodes.a.agent: node 'a': the policy allows only some")
    assert line.endswith("(agents.models: gpt-5): set agent.model")


def test_a_permission_mode_outside_the_list_is_refused(tmp_path):
    policy = policy_with(tmp_path, "permission_modes: [plan, acceptEdits]")
    text = node("runtime: claude\nprompt: go\nagent:\n  permission_mode: bypassPermissions\n")
    (line,) = refusals(text, policy)
    assert line == (
        "wf.yaml:8: nodes.a.agent.permission_mode: node 'a': permission mode "
        "'bypassPermissions' is not allowed by the policy (agents.permission_modes: plan, "
        "acceptEdits)"
    )
    assert admit(plan_of(node("runtime: claude\nprompt: go\n")), policy, environ=ENV)


def test_a_runtime_default_mode_is_judged_too(tmp_path):
    policy = policy_with(tmp_path, "permission_modes: [plan]")
    (line,) = refusals(node("runtime: claude\nprompt: go\n"), policy)
    assert line.startswith("wf.yaml:5: nodes.a.runtime: node 'a': permission mode 'acceptEdits'")
    assert "(claude's default)" in line
    assert admit(plan_of(node("runtime: codex\nprompt: go\n")), policy, environ=ENV)


@pytest.mark.parametrize("tool", ["Bash", "Bash(git *)", "bash", "mcp__github__push"])
def test_a_never_allowed_tool_is_refused_in_every_spelling(tmp_path, tool):
    policy = policy_with(tmp_path, "never_allow_tools: [Bash, 'mcp__*']")
    text = node(f"runtime: claude\nprompt: go\nagent:\n  allowed_tools: [Read, '{tool}']\n")
    (line,) = refusals(text, policy)
    assert line.startswith("wf.yaml:8: nodes.a.agent.allowed_tools[1]: node 'a': tool ")
    assert "may never be allowed (agents.never_allow_tools: " in line


def test_never_allowed_tools_may_be_disallowed(tmp_path):
    policy = policy_with(tmp_path, "never_allow_tools: [Bash]")
    text = node("runtime: claude\nprompt: go\nagent: {disallowed_tools: [Bash]}\n")
    assert admit(plan_of(text), policy, environ=ENV)["a"]


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ("runtime: claude\ncommand: 'claude -p hi --dangerously-skip-permissions'\n", "command",
         "not its own command"),
        ("runtime: claude\nprompt: go\ncommand: [--dangerously-skip-permissions]\n", "command",
         "extra CLI arguments could override them"),
        ("runtime: codex\nprompt: go\ncommand: [--settings, x]\n", "command",
         "extra CLI arguments"),
        ("runtime: claude\nprompt: go\nenv: {ANTHROPIC_MODEL: claude-opus-4}\n",
         "env.ANTHROPIC_MODEL", "ANTHROPIC_MODEL would override them"),
        ("runtime: codex\nprompt: go\nenv: {CODEX_HOME: /workspace/.codex}\n", "env.CODEX_HOME",
         "CODEX_HOME would override them"),
    ],
)  # fmt: skip
def test_under_restrictions_only_the_block_may_set_agent_settings(tmp_path, body, field, says):
    policy = policy_with(tmp_path, "permission_modes: [plan, acceptEdits]")
    (line,) = refusals(node(body), policy)
    assert f"nodes.a.{field}: node 'a': the policy restricts agent settings" in line
    assert says in line


def test_without_restrictions_raw_arguments_stay_allowed(tmp_path):
    policy = policy_with(tmp_path, "budget: {usd: 1}")
    text = node("runtime: claude\nprompt: go\ncommand: [--bare]\nenv: {ANTHROPIC_MODEL: m}\n")
    assert admit(plan_of(text), policy, environ=ENV)["a"]


def test_a_custom_runtime_on_an_agent_image_is_refused_under_restrictions(tmp_path):
    policy = policy_with(tmp_path, "never_allow_tools: [Bash]")
    top = "runtimes:\n  mine: {image: sandbox-orch/claude}\n"
    (line,) = refusals(node("runtime: mine\ncommand: [claude, -p, hi]\n", top), policy)
    assert line.startswith("wf.yaml:4: runtimes.mine.image: node 'a': the policy restricts")


@pytest.mark.parametrize(
    ("image", "name"),
    [
        ("sandbox-orch/claude", "sandbox-orch/claude"),
        ("sandbox-orch/claude:latest", "sandbox-orch/claude"),
        ("sandbox-orch/codex@sha256:ab", "sandbox-orch/codex"),
        ("localhost:5000/x/y:1", "localhost:5000/x/y"),
        ("localhost:5000/x/y", "localhost:5000/x/y"),
        ("localhost:5000/x/y:1@sha256:ab", "localhost:5000/x/y"),
        ("r.io/a/b/c:t", "r.io/a/b/c"),
    ],
)
def test_image_names_without_tag_or_digest(image, name):
    assert _image_name(image) == name


# ---------------------------------------------------------------- admission: budgets


def test_a_node_budget_above_the_ceiling_is_refused(tmp_path):
    policy = policy_with(tmp_path, "budget: {usd: 5, turns: 20}")
    text = node("runtime: claude\nprompt: go\nbudget:\n  usd: 6\n  turns: {limit: 9, mode: warn}\n")
    lines = refusals(text, policy)
    assert lines == [
        "wf.yaml:8: nodes.a.budget.usd: node 'a': budget usd: 6.00 is above the policy's "
        "ceiling of 5.00 (agents.budget.usd)",
        "wf.yaml:9: nodes.a.budget.turns: node 'a': budget turns: the policy's ceiling "
        "blocks; a workflow cannot make it only warn (agents.budget.turns)",
    ]


def test_a_workflow_budget_above_the_ceiling_is_refused(tmp_path):
    policy = policy_with(tmp_path, "budget: {tokens: 1000000}")
    text = node("runtime: claude\nprompt: go\n", top="budget:\n  tokens: 2000000\n")
    (line,) = refusals(text, policy)
    assert line == (
        "wf.yaml:4: budget.tokens: budget tokens: 2000000 is above the policy's ceiling of "
        "1000000 (agents.budget.tokens)"
    )


def test_the_run_budget_is_the_workflows_under_the_ceiling(tmp_path):
    policy = policy_with(tmp_path, "budget: {usd: 5, tokens: 1000000}")
    plan = plan_of(node("runtime: claude\nprompt: go\n", top="budget: {usd: 2}\n"))
    assert run_budget(plan, policy) == Budget(usd=2, tokens=1_000_000)
    plan = plan_of(node("runtime: claude\nprompt: go\n"))
    assert run_budget(plan, policy) == Budget(usd=5, tokens=1_000_000)
    assert run_budget(plan, load_policy(POLICIES_DIR / "default.yaml")) is None


def test_prepare_exposes_the_run_budget(tmp_path, monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    policy = policy_with(tmp_path, "budget: {usd: 3}")
    workflow = tmp_path / "wf.yaml"
    workflow.write_text(node("runtime: claude\nprompt: go\n"))
    assert prepare(workflow, Path(policy.path)).budget == Budget(usd=3)


def test_every_never_allowed_tool_is_refused_not_only_the_first(tmp_path):
    policy = policy_with(tmp_path, "never_allow_tools: [Bash, WebFetch]")
    text = node("runtime: claude\nprompt: go\nagent:\n  allowed_tools: [Bash, WebFetch]\n")
    lines = refusals(text, policy)
    assert [line.split(": ")[1] for line in lines] == [
        "nodes.a.agent.allowed_tools[0]",
        "nodes.a.agent.allowed_tools[1]",
    ]


def test_an_empty_list_allows_nothing_and_says_so(tmp_path):
    policy = policy_with(tmp_path, "models: []\npermission_modes: []")
    lines = refusals(node("runtime: claude\nprompt: go\nagent: {model: m}\n"), policy)
    assert lines == [
        "wf.yaml:7: nodes.a.agent.model: node 'a': model 'm' is not allowed by the policy "
        "(agents.models: none)",
        "wf.yaml:5: nodes.a.runtime: node 'a': permission mode 'acceptEdits' (claude's "
        "default) is not allowed by the policy (agents.permission_modes: none)",
    ]


def test_the_allowed_models_are_listed_in_the_refusal(tmp_path):
    policy = policy_with(tmp_path, "models: [a, 'b-*']")
    (line,) = refusals(node("runtime: claude\nprompt: go\n"), policy)
    assert line.endswith("(agents.models: a, b-*): set agent.model")
