"""`single`'s refusals say what is wrong first and how to fix it (issue 12, items 7 and 8):
an unknown runtime before anything about --prompt, a missing image with its build
command, the shipped policy that grants an agent, shipped policies by name from any
directory, and a Claude subscription token as the claude preset's login."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner

from sandbox_orch.admission import admit
from sandbox_orch.backend.memory import MemoryBackend
from sandbox_orch.cli import main
from sandbox_orch.errors import InfrastructureError, InputRefused
from sandbox_orch.images import build_hint
from sandbox_orch.orchestrator import preflight
from sandbox_orch.policy import (
    DEFAULT_POLICY,
    POLICIES_DIR,
    POLICY_ENV,
    choose_policy_path,
    load_policy,
    shipped_granting,
)
from sandbox_orch.single import SingleRequest, single_plan

from .helpers import admitted, default_policy, plan_of

REPO = Path(__file__).resolve().parents[2]
AGENTS = load_policy(POLICIES_DIR / "agents.yaml")
CLAUDE = "version: 1\nname: x\nnodes:\n  r: {runtime: claude, prompt: review}\n"


def refusal(request: SingleRequest) -> str:
    with pytest.raises(InputRefused) as caught:
        single_plan(request)
    (problem,) = caught.value.problems
    return str(problem)


# --- an unknown runtime is said first ---------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "args"), [(None, ()), ("do it", ()), (None, ("make",)), ("x", ("y",))]
)
def test_an_unknown_runtime_is_reported_as_such_whatever_else_is_given(tmp_path, prompt, args):
    line = refusal(SingleRequest("claud", tmp_path, prompt=prompt, args=args))
    assert "unknown runtime 'claud'" in line and "claude" in line  # the runtimes are listed
    assert "--prompt" not in line and "after --" not in line


def test_a_known_runtime_still_gets_its_own_hint(tmp_path):
    assert "no --prompt, and stdin or stdout is not a terminal" in refusal(
        SingleRequest("claude", tmp_path)
    )
    assert "after --" in refusal(SingleRequest("shell", tmp_path))


# --- a missing image says how to build it -----------------------------------------------


def test_a_missing_image_of_ours_names_its_build_command():
    assert build_hint("sandbox-orch/codex") == "run `sandbox-orch images build codex`"
    assert build_hint("sandbox-orch/codex:latest") == "run `sandbox-orch images build codex`"


def test_a_missing_image_of_someone_else_s_says_docker_build(tmp_path):
    hint = build_hint("sandbox-orch/nope", images_dir=REPO / "images")
    assert "docker build -t sandbox-orch/nope" in hint and "sandbox-orch images build" in hint
    assert "images build nope" not in hint


def test_preflight_names_the_image_to_build():
    _, sandboxes = admitted("version: 1\nname: x\nnodes:\n  a: {runtime: python, command: [x]}\n")
    backend = MemoryBackend(images={"sandbox-orch/shell"})
    with pytest.raises(InfrastructureError) as caught:
        asyncio.run(preflight(backend, default_policy(), sandboxes))
    assert str(caught.value).endswith("run `sandbox-orch images build python`")


# --- the policy that grants an agent is named --------------------------------------------


def test_a_policy_without_the_agent_names_the_shipped_one_that_grants_it():
    with pytest.raises(InputRefused) as caught:
        admit(plan_of(CLAUDE), default_policy(), environ={"ANTHROPIC_API_KEY": "k-123456"})
    lines = [str(p) for p in caught.value.problems]
    assert any(
        "runtime 'claude' is not granted by the policy (the shipped policy 'agents' grants it: "
        "--policy agents)" in line
        for line in lines
    ), lines


def test_a_plain_runtime_refusal_names_no_agent_policy():
    policy = load_policy(POLICIES_DIR / "agents.yaml")
    with pytest.raises(InputRefused) as caught:
        admit(plan_of("version: 1\nname: x\nnodes:\n  a: {command: [x]}\n"), policy)
    assert all("shipped policy" not in str(p) for p in caught.value.problems)


def test_a_policy_named_like_the_shipped_one_is_not_sent_to_itself(tmp_path):
    text = (
        (POLICIES_DIR / "agents.yaml")
        .read_text()
        .replace("runtimes: [claude, codex]", "runtimes: [codex]")
    )
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(InputRefused) as caught:
        admit(
            plan_of(CLAUDE),
            load_policy(tmp_path / "p.yaml"),
            environ={"ANTHROPIC_API_KEY": "k-123456"},
        )
    lines = [str(p) for p in caught.value.problems]
    assert any(line.endswith("runtime 'claude' is not granted by the policy") for line in lines)


def test_shipped_granting_reads_the_shipped_policies():
    assert shipped_granting("claude") == "agents" and shipped_granting("codex") == "agents"
    assert shipped_granting("nothing-grants-this") is None


# --- shipped policies by name ----------------------------------------------------------


@pytest.mark.parametrize("name", ["agents", "ci", "default"])
def test_a_shipped_policy_s_name_resolves_from_any_directory(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(POLICY_ENV, raising=False)
    assert choose_policy_path(name) == POLICIES_DIR / f"{name}.yaml"
    monkeypatch.setenv(POLICY_ENV, name)
    assert choose_policy_path(None) == POLICIES_DIR / f"{name}.yaml"
    assert load_policy(choose_policy_path(None)).name == name


def test_a_file_of_that_name_in_the_working_directory_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "agents").write_text("mine")
    assert choose_policy_path("agents") == Path("agents")
    (tmp_path / "default").symlink_to(tmp_path / "nowhere")  # even a dangling link: refused
    assert choose_policy_path("default") == Path("default")  # when read, never the shipped


def test_a_directory_of_that_name_is_no_policy_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ci").mkdir()  # a repository's ci/ directory
    assert choose_policy_path("ci") == POLICIES_DIR / "ci.yaml"


@pytest.mark.parametrize("value", ["policies/agents", "agents.yaml", "./ci", "x/default.yml"])
def test_a_path_with_a_slash_or_a_yaml_suffix_is_always_a_path(value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert choose_policy_path(value) == Path(value)


def test_an_unknown_name_is_refused_listing_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputRefused) as caught:
        choose_policy_path("agentz")
    (problem,) = caught.value.problems
    assert "'agentz'" in str(problem) and "agents, ci, default" in str(problem)


def test_without_a_choice_the_default_applies(monkeypatch):
    monkeypatch.delenv(POLICY_ENV, raising=False)
    assert choose_policy_path(None) == DEFAULT_POLICY


def test_the_cli_names_a_shipped_policy_from_another_directory(tmp_path, monkeypatch):
    """`single claude --policy agents` run from an unrelated directory: the policy is
    found (the refusal is about the missing key, not the policy file), nothing starts."""
    for name in ("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN", POLICY_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SANDBOX_ORCH_HOME", str(tmp_path / "store"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    args = ["single", "claude", "--policy", "agents", "--prompt", "hi", "--ci"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "environment variable ANTHROPIC_API_KEY is not set" in result.stderr
    assert "CLAUDE_CODE_OAUTH_TOKEN" in result.stderr  # the other way to log in is named
    assert not (tmp_path / "store").exists()  # nothing started, no run kept


# --- a Claude subscription token --------------------------------------------------------


def test_claude_logs_in_with_a_subscription_token_when_no_api_key_is_set():
    box = admit(plan_of(CLAUDE), AGENTS, environ={"CLAUDE_CODE_OAUTH_TOKEN": "tok-123456"})["r"]
    assert box.secrets == ("CLAUDE_CODE_OAUTH_TOKEN",)
    assert box.egress == () and box.brokered == {
        "CLAUDE_CODE_OAUTH_TOKEN": "https://api.anthropic.com"
    }


def test_the_api_key_comes_first_when_both_are_set():
    environ = {"CLAUDE_CODE_OAUTH_TOKEN": "tok-123456", "ANTHROPIC_API_KEY": "k-123456"}
    assert admit(plan_of(CLAUDE), AGENTS, environ=environ)["r"].secrets == ("ANTHROPIC_API_KEY",)


def test_a_token_the_policy_does_not_grant_to_claude_is_not_taken(tmp_path):
    text = (POLICIES_DIR / "agents.yaml").read_text()
    changed = text.replace(
        "from_env: CLAUDE_CODE_OAUTH_TOKEN\n    runtimes: [claude]",
        "from_env: CLAUDE_CODE_OAUTH_TOKEN\n    runtimes: [codex]",
    )
    assert changed != text
    (tmp_path / "p.yaml").write_text(changed)
    policy = load_policy(tmp_path / "p.yaml")
    with pytest.raises(InputRefused) as caught:
        admit(plan_of(CLAUDE), policy, environ={"CLAUDE_CODE_OAUTH_TOKEN": "tok-123456"})
    assert any("ANTHROPIC_API_KEY is not set" in str(p) for p in caught.value.problems)


def test_an_explicit_secret_is_taken_as_asked():
    text = CLAUDE.replace("prompt: review}", "prompt: review, secrets: [CLAUDE_CODE_OAUTH_TOKEN]}")
    environ = {"CLAUDE_CODE_OAUTH_TOKEN": "tok-123456", "ANTHROPIC_API_KEY": "k-123456"}
    box = admit(plan_of(text), AGENTS, environ=environ)["r"]
    assert box.secrets == ("CLAUDE_CODE_OAUTH_TOKEN",)
    text = CLAUDE.replace("prompt: review}", "prompt: review, secrets: [ANTHROPIC_API_KEY]}")
    with pytest.raises(InputRefused) as caught:  # asked for the key: no fallback to the token
        admit(plan_of(text), AGENTS, environ={"CLAUDE_CODE_OAUTH_TOKEN": "tok-123456"})
    assert any("ANTHROPIC_API_KEY is not set" in str(p) for p in caught.value.problems)


def test_codex_has_no_token_alternative():
    text = "version: 1\nname: x\nnodes:\n  r: {runtime: codex, prompt: review}\n"
    with pytest.raises(InputRefused) as caught:
        admit(plan_of(text), AGENTS, environ={"CLAUDE_CODE_OAUTH_TOKEN": "tok-123456"})
    assert any("OPENAI_API_KEY is not set" in str(p) for p in caught.value.problems)


def agents_policy_with(tmp_path, old: str, new: str):
    text = (POLICIES_DIR / "agents.yaml").read_text()
    assert old in text
    (tmp_path / "p.yaml").write_text(text.replace(old, new))
    return load_policy(tmp_path / "p.yaml")


def test_a_token_is_taken_when_the_api_key_is_not_granted_at_all(tmp_path):
    policy = agents_policy_with(tmp_path, "  ANTHROPIC_API_KEY:\n", "  OTHER_KEY:\n")
    environ = {"CLAUDE_CODE_OAUTH_TOKEN": "tok-123456", "ANTHROPIC_API_KEY": "k-123456"}
    assert admit(plan_of(CLAUDE), policy, environ=environ)["r"].secrets == (
        "CLAUDE_CODE_OAUTH_TOKEN",
    )


def test_a_token_that_may_not_go_to_the_node_s_host_is_not_taken(tmp_path):
    """In the environment mode (not brokered), the token must be allowed to the API host."""
    policy = agents_policy_with(
        tmp_path,
        "    runtimes: [claude]\n    egress: []\n"
        '    broker: {upstream: "https://api.anthropic.com", authorization: Bearer}\n',
        '    runtimes: [claude]\n    egress: ["other.example:443"]\n',
    )
    assert policy.secrets["CLAUDE_CODE_OAUTH_TOKEN"].broker is None
    with pytest.raises(InputRefused) as caught:
        admit(plan_of(CLAUDE), policy, environ={"CLAUDE_CODE_OAUTH_TOKEN": "tok-123456"})
    (problem,) = caught.value.problems
    assert str(problem).endswith(
        "secret ANTHROPIC_API_KEY: environment variable ANTHROPIC_API_KEY is not set "
        "(claude logs in with any one of ANTHROPIC_API_KEY, CLAUDE_CODE_OAUTH_TOKEN)"
    )


def test_the_login_hint_is_given_for_a_defaulted_claude_secret_only(tmp_path):
    def refusals(text: str, policy=AGENTS) -> str:
        with pytest.raises(InputRefused) as caught:
            admit(plan_of(text), policy, environ={})
        return "\n".join(str(p) for p in caught.value.problems)

    hint = "(claude logs in with any one of ANTHROPIC_API_KEY, CLAUDE_CODE_OAUTH_TOKEN)"
    assert hint in refusals(CLAUDE)
    asked = CLAUDE.replace("prompt: review}", "prompt: review, secrets: [ANTHROPIC_API_KEY]}")
    assert "logs in with" not in refusals(asked)
    codex = "version: 1\nname: x\nnodes:\n  r: {runtime: codex, prompt: review}\n"
    assert "logs in with" not in refusals(codex)
    ungranted = agents_policy_with(tmp_path, "  ANTHROPIC_API_KEY:\n", "  OTHER_KEY:\n")
    assert refusals(CLAUDE, ungranted).endswith(
        f"secret ANTHROPIC_API_KEY is not granted by the policy {hint}"
    )
    elsewhere = agents_policy_with(
        tmp_path,
        "from_env: ANTHROPIC_API_KEY\n    runtimes: [claude]",
        "from_env: ANTHROPIC_API_KEY\n    runtimes: [codex]",
    )
    assert refusals(CLAUDE, elsewhere).endswith(
        f"secret ANTHROPIC_API_KEY is not granted to runtime 'claude' {hint}"
    )
