"""The `agent:` block mapped to each CLI's flags (agents/flags.py), and planning's
refusals: a setting a runtime lacks, `agent:` where no agent runs, raw flags that clash."""

from __future__ import annotations

import textwrap

import pytest

from sandbox_orch.agents.flags import agent_flags, conflicts, permission_mode, toml_string
from sandbox_orch.agents.settings import AgentSettings
from sandbox_orch.errors import InputRefused

from .helpers import plan_of

CLAUDE_HEAD = ("claude", "-p", "--output-format", "stream-json", "--verbose",
               "--include-partial-messages", "--strict-mcp-config")  # fmt: skip
CODEX_HEAD = ("sandbox-orch-codex", "exec", "--json", "--skip-git-repo-check")


def settings(**fields) -> AgentSettings:
    return AgentSettings.model_validate(fields)


def flags(runtime: str, **fields) -> tuple[str, ...]:
    mapped = agent_flags(runtime, settings(**fields))
    assert mapped.refusals == (), mapped.refusals
    return mapped.flags


def refusals(runtime: str, **fields) -> list[tuple[tuple, str]]:
    mapped = agent_flags(runtime, settings(**fields))
    assert mapped.flags == ()  # nothing is half-mapped
    return [(r.loc, r.message) for r in mapped.refusals]


# ---------------------------------------------------------------- Claude Code


def test_claude_without_settings_keeps_accept_edits_explicit():
    assert agent_flags("claude", None).flags == ("--permission-mode", "acceptEdits")
    assert flags("claude") == ("--permission-mode", "acceptEdits")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"model": "claude-sonnet-4-5"}, ("--model=claude-sonnet-4-5",)),
        ({"allowed_tools": ["Read", "Bash(git diff *)"]},
         ("--allowedTools=Read", "--allowedTools=Bash(git diff *)")),
        ({"disallowed_tools": ["WebFetch", "mcp__github__create_issue"]},
         ("--disallowedTools=WebFetch", "--disallowedTools=mcp__github__create_issue")),
        ({"max_turns": 3}, ("--max-turns", "3")),
        ({"system_prompt_append": "-be brief"}, ("--append-system-prompt=-be brief",)),
    ],
)  # fmt: skip
def test_claude_maps_each_field_to_its_flag(fields, expected):
    mapped = flags("claude", **fields)
    at = mapped.index("--permission-mode")
    assert mapped[at : at + 2] == ("--permission-mode", "acceptEdits")
    assert mapped[:at] + mapped[at + 2 :] == expected


@pytest.mark.parametrize("mode", ["default", "acceptEdits", "plan", "bypassPermissions"])
def test_claude_permission_mode_replaces_the_default(mode):
    mapped = flags("claude", permission_mode=mode)
    assert mapped == ("--permission-mode", mode)
    assert permission_mode("claude", settings(permission_mode=mode)) == mode


@pytest.mark.parametrize(
    "tool", ["Read Bash", "Read,Bash", "Bash(a) Read", "Bash(x,y)", "Bash((x))", "(Bash)", "1x"]
)
def test_claude_refuses_a_tool_entry_that_would_split_into_several(tool):
    # Claude splits tool lists on commas and on spaces outside parentheses: a policy
    # that judged "Read Bash" as one tool would let Bash through.
    ((loc, message),) = refusals("claude", allowed_tools=["Read", tool])
    assert loc == ("agent", "allowed_tools", 1) and "not one Claude Code tool rule" in message
    ((loc, _),) = refusals("claude", disallowed_tools=[tool])
    assert loc == ("agent", "disallowed_tools", 0)


# ---------------------------------------------------------------- Codex


def test_codex_without_settings_runs_read_only_explicitly():
    assert agent_flags("codex", None).flags == ("--sandbox", "read-only")


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("plan", ("--sandbox", "read-only")),
        ("acceptEdits", ("--sandbox", "workspace-write")),
        ("bypassPermissions", ("--dangerously-bypass-approvals-and-sandbox",)),
    ],
)
def test_codex_permission_modes_are_its_sandbox_modes(mode, expected):
    assert flags("codex", permission_mode=mode) == expected


def test_codex_model_and_system_prompt():
    mapped = flags("codex", model="gpt-5-codex", system_prompt_append='say "hi"\nthen\\stop')
    assert mapped == (
        "--model=gpt-5-codex",
        "--sandbox",
        "read-only",
        "-c",
        'developer_instructions="say \\"hi\\"\\nthen\\\\stop"',
    )


@pytest.mark.parametrize(
    ("fields", "loc", "lacks"),
    [
        ({"allowed_tools": ["Read"]}, ("agent", "allowed_tools"), "per-tool allow list"),
        ({"disallowed_tools": ["Bash"]}, ("agent", "disallowed_tools"), "per-tool deny list"),
        ({"max_turns": 2}, ("agent", "max_turns"), "turn limit"),
        ({"permission_mode": "default"}, ("agent", "permission_mode"), "asks before each"),
    ],
)
def test_codex_refuses_what_it_has_no_equivalent_for(fields, loc, lacks):
    ((where, message),) = refusals("codex", model="gpt-5", **fields)
    assert where == loc and "runtime 'codex'" in message and lacks in message


def test_codex_takes_empty_tool_lists():
    assert flags("codex", allowed_tools=[], disallowed_tools=[]) == ("--sandbox", "read-only")


def test_toml_string_escapes_everything_toml_forbids_raw():
    import tomllib

    text = 'a"b\\c\nd\te\x00f\x1fg\x7fh ü 😀'
    assert tomllib.loads(f"k = {toml_string(text)}")["k"] == text


# ---------------------------------------------------------------- raw flags that clash


@pytest.mark.parametrize(
    ("runtime", "field", "extra", "index"),
    [
        ("claude", {"model": "m"}, ["--verbose", "--model", "x"], 1),
        ("claude", {"model": "m"}, ["--model=x"], 0),
        ("claude", {"permission_mode": "plan"}, ["--dangerously-skip-permissions"], 0),
        ("claude", {"allowed_tools": ["Read"]}, ["--allowed-tools", "Bash"], 0),
        ("claude", {"disallowed_tools": ["Bash"]}, ["--disallowedTools=Read"], 0),
        ("claude", {"max_turns": 1}, ["--max-turns", "9"], 0),
        ("claude", {"system_prompt_append": "x"}, ["--append-system-prompt-file", "f"], 0),
        ("codex", {"model": "m"}, ["-m", "x"], 0),
        ("codex", {"model": "m"}, ["-mx"], 0),
        ("codex", {"model": "m"}, ["-c", "model=x"], 1),
        ("codex", {"model": "m"}, ["-c", "model=a=b"], 1),
        ("codex", {"model": "m"}, ["--config=model=x"], 0),
        ("codex", {"model": "m"}, ["-cmodel=x"], 0),
        ("codex", {"permission_mode": "plan"}, ["--sandbox", "danger-full-access"], 0),
        ("codex", {"permission_mode": "plan"}, ["-c", "sandbox_mode=x"], 1),
        ("codex", {"system_prompt_append": "x"}, ["--config", "developer_instructions=y"], 1),
    ],
)
def test_a_raw_flag_that_sets_a_field_of_the_block_is_refused(runtime, field, extra, index):
    ((refusal),) = conflicts(runtime, settings(**field), extra)
    assert refusal.loc == ("command", index)
    assert f"agent.{next(iter(field))}" in refusal.message


def test_raw_flags_for_fields_the_block_leaves_unset_are_kept():
    assert conflicts("claude", settings(model="m"), ["--max-turns", "2", "--bare"]) == []
    assert conflicts("claude", None, ["--model", "x"]) == []
    assert conflicts("codex", settings(model="m"), ["-c", "foo=1", "--sandbox", "x"]) == []


# ---------------------------------------------------------------- planning


def wf(node: str) -> str:
    return "version: 1\nname: x\nnodes:\n  a:\n" + textwrap.indent(textwrap.dedent(node), "    ")


def refused(text: str) -> list[str]:
    with pytest.raises(InputRefused) as caught:
        plan_of(text)
    return [str(p) for p in caught.value.problems]


def test_the_plan_carries_the_flags_before_the_extra_arguments():
    plan = plan_of(
        wf("""
        runtime: claude
        prompt: go
        command: ["--bare"]
        agent: {model: claude-x, max_turns: 1, permission_mode: plan}
        """)
    )
    assert plan.nodes["a"].argv == (
        *CLAUDE_HEAD, "--model=claude-x", "--permission-mode", "plan", "--max-turns", "1",
        "--bare", "--", "go",
    )  # fmt: skip
    plan = plan_of(wf("runtime: codex\nprompt: go\nagent: {model: gpt-x}\n"))
    assert plan.nodes["a"].argv == (
        *CODEX_HEAD,
        "--model=gpt-x",
        "--sandbox",
        "read-only",
        "--",
        "go",
    )


def test_a_node_without_agent_block_keeps_todays_argv():
    plan = plan_of(wf("runtime: claude\nprompt: go\n"))
    assert plan.nodes["a"].argv == (*CLAUDE_HEAD, "--permission-mode", "acceptEdits", "--", "go")


@pytest.mark.parametrize("runtime", ["claude", "codex"])
def test_a_prompt_that_looks_like_an_option_stays_a_prompt(runtime):
    """After `--`, last: `--dangerously-skip-permissions` as a prompt is text to the CLI
    (a prompt may be an earlier agent's answer, handed on)."""
    plan = plan_of(wf(f"runtime: {runtime}\nprompt: '--dangerously-skip-permissions now'\n"))
    argv = plan.nodes["a"].argv
    assert argv[-2:] == ("--", "--dangerously-skip-permissions now")
    assert argv.count("--dangerously-skip-permissions now") == 1


def test_a_setting_codex_lacks_is_refused_with_its_line():
    (line,) = refused(wf("runtime: codex\nprompt: go\nagent:\n  model: m\n  max_turns: 3\n"))
    assert line.startswith("wf.yaml:9: nodes.a.agent.max_turns: runtime 'codex' has no turn")


def test_agent_on_a_runtime_without_an_agent_is_refused():
    (line,) = refused(wf("command: [echo]\nagent: {model: m}\n"))
    assert line.startswith("wf.yaml:6: nodes.a.agent: runtime 'shell' runs no coding agent")


def test_agent_without_prompt_is_refused():
    (line,) = refused(wf("runtime: claude\ncommand: 'claude -p hi'\nagent: {model: m}\n"))
    assert line.startswith("wf.yaml:7: nodes.a.agent: `agent:` settings need `prompt`")


def test_a_clashing_raw_flag_is_refused_with_its_line():
    (line,) = refused(
        wf("runtime: claude\nprompt: go\ncommand: [--model, other]\nagent: {model: m}\n")
    )
    assert line.startswith("wf.yaml:7: nodes.a.command[0]: '--model' sets what agent.model")


def test_a_bad_tool_rule_is_refused_with_its_line():
    text = wf(
        "runtime: claude\nprompt: go\nagent:\n  allowed_tools:\n    - Read\n    - Read Bash\n"
    )
    (line,) = refused(text)
    assert line.startswith("wf.yaml:10: nodes.a.agent.allowed_tools[1]: 'Read Bash' is not one")


@pytest.mark.parametrize("runtime", ["claude", "codex"])
def test_a_system_prompt_no_command_line_can_carry_is_refused(runtime):
    ((loc, message),) = refusals(runtime, system_prompt_append="a\x00b")
    assert loc == ("agent", "system_prompt_append") and message == "cannot contain NUL"


def test_refusal_messages_in_full():
    ((_, message),) = refusals("claude", allowed_tools=["Read Bash"])
    assert message == (
        "'Read Bash' is not one Claude Code tool rule: use a tool name, optionally with one "
        "(specifier), with no commas and no spaces outside the parentheses"
    )
    found = refusals("codex", allowed_tools=["R"], disallowed_tools=["B"], max_turns=1)
    assert [m for _, m in found] == [
        "runtime 'codex' has no per-tool allow list; remove allowed_tools",
        "runtime 'codex' has no per-tool deny list; remove disallowed_tools",
        "runtime 'codex' has no turn limit; remove max_turns",
    ]
    ((_, message),) = refusals("codex", permission_mode="default")
    assert message == (
        "runtime 'codex' has no mode that asks before each action (codex exec has nobody to "
        "ask); use plan (read-only), acceptEdits (workspace-write) or bypassPermissions"
    )
    (refusal,) = conflicts("claude", settings(model="m"), ["--model", "x"])
    assert refusal.message == (
        "'--model' sets what agent.model sets; keep one (the `agent:` block is what the "
        "policy checks)"
    )


@pytest.mark.parametrize(
    ("runtime", "extra"),
    [
        ("codex", ["model=x", "-c"]),  # a value before -c is not -c's value
        ("codex", ["zzmodel=x"]),  # not a -c option with its value attached
        ("codex", ["-c"]),  # -c with nothing attached
        ("claude", ["-c", "model=x"]),  # Claude's -c is --continue, not a config override
    ],
)
def test_what_only_looks_like_a_config_override_is_not_one(runtime, extra):
    assert conflicts(runtime, settings(model="m"), extra) == []


def test_a_tab_in_a_codex_system_prompt_stays_a_tab_escape():
    assert toml_string("a\tb") == '"a\\tb"'
