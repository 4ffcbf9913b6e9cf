"""`policy review` on the `agents:` section (SO801-SO804), beyond the fixture corpus."""

from __future__ import annotations

from sandbox_orch import review as reviewing
from sandbox_orch.policy import DEFAULT_POLICY, POLICIES_DIR, load_policy

AGENT_RULES = {"SO801", "SO802", "SO803", "SO804"}


def ids(path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for finding in reviewing.review(load_policy(path)):
        found.setdefault(finding.id, []).append(finding.title)
    return found


def test_a_policy_without_agent_runtimes_gets_no_agent_findings():
    assert not AGENT_RULES & set(ids(DEFAULT_POLICY))
    assert not AGENT_RULES & set(ids(POLICIES_DIR / "ci.yaml"))


def test_the_permissive_example_lets_agents_do_anything():
    found = ids(POLICIES_DIR / "examples" / "permissive.yaml")
    assert found["SO801"] == ["any permission mode, bypassPermissions included"]
    assert found["SO802"] == ["no spend ceiling for agent runs"]
    assert found["SO803"] == ["no tool is ruled out of allowed_tools"]
    assert found["SO804"] == ["workflows may choose any model"]


def test_the_shipped_agents_policy_blocks_bypass_and_caps_spend():
    found = ids(POLICIES_DIR / "agents.yaml")
    assert "SO801" not in found and "SO802" not in found
    # Bash stays allowed there on purpose (agents run commands in their sandbox): said.
    assert found["SO803"] == ["nodes may pre-approve Bash (any command)"]


def _policy(tmp_path, name: str, agents: str):
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"version: 1\nname: {name}\nruntimes: [claude]\n{agents}")
    return load_policy(path)


def _changes(old, new) -> list[tuple[str, str, int | None]]:
    return [(c.direction, c.summary, c.line) for c in reviewing.compare(old, new)]


def test_against_says_what_a_change_lets_agents_do(tmp_path):
    old = _policy(
        tmp_path,
        "old",
        "agents:\n"
        "  models: [claude-sonnet-4-5]\n"
        "  permission_modes: [plan, acceptEdits]\n"
        "  never_allow_tools: [Bash, WebFetch]\n"
        "  budget: {usd: 5, tokens: 1000000}\n",
    )
    new = _policy(
        tmp_path,
        "new",
        "agents:\n"
        "  models: [claude-sonnet-4-5, 'claude-opus-*']\n"
        "  permission_modes: [plan]\n"
        "  never_allow_tools: [WebFetch, WebSearch]\n"
        "  budget: {usd: 20, tokens: {limit: 1000000, mode: warn}, turns: 50}\n",
    )
    changes = [c for c in _changes(old, new) if "name" not in c[1]]
    assert changes == [
        ("widens", "model claude-opus-* allowed", 5),
        ("widens", "tokens ceiling 1000000 -> 1000000 (warn)", 8),
        ("widens", "usd ceiling 5 -> 20", 8),
        ("widens", "tool Bash may be pre-approved again", 7),  # where it was: the old file
        ("narrows", "tool WebSearch may never be pre-approved", 7),
        ("narrows", "turns ceiling 50 added", 8),
        ("narrows", "permission mode acceptEdits no longer allowed", 6),  # the old file
    ]


def test_against_treats_a_missing_list_as_any_and_a_missing_ceiling_as_none(tmp_path):
    old = _policy(tmp_path, "old", "agents:\n  models: [m]\n  budget: {usd: 5}\n")
    new = _policy(tmp_path, "new", "agents:\n  permission_modes: [plan]\n")
    changes = [c[:2] for c in _changes(old, new) if "name" not in c[1]]
    assert changes == [
        ("widens", "any model allowed (agents.models removed)"),
        ("widens", "no usd ceiling (was 5)"),
        ("narrows", "only plan permission modes allowed"),
    ]


def test_workflow_privileges_show_what_an_agent_may_do():
    from .helpers import plan_of

    plan = plan_of(
        "version: 1\nname: x\nnodes:\n"
        "  a: {runtime: claude, prompt: go, agent: {allowed_tools: [Read], max_turns: 3},"
        " budget: {usd: 2}}\n"
        "  b: {runtime: codex, prompt: go}\n"
        "  c: {command: [echo]}\n"
    )
    policy = load_policy(POLICIES_DIR / "agents.yaml")
    import dataclasses

    from sandbox_orch.admission import admit
    from sandbox_orch.policy import AgentRules

    policy = dataclasses.replace(policy, runtimes=(*policy.runtimes, "shell"), agents=AgentRules())
    env = {"ANTHROPIC_API_KEY": "k-123456", "OPENAI_API_KEY": "k-654321"}
    found = reviewing.privileges(plan, admit(plan, policy, environ=env))
    assert found["a"]["agent"] == {
        "model": "the CLI's default",
        "permission_mode": "acceptEdits",
        "allowed_tools": ["Read"],
        "max_turns": 3,
        "budget": {"usd": "2 (block)"},
    }
    assert found["b"]["agent"] == {"model": "the CLI's default", "permission_mode": "plan"}
    assert "agent" not in found["c"]
