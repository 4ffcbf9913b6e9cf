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
