"""zen configs (agents/zen.py): every field's mapping, every refusal with its line, and
the YAML that `convert zen` prints reading back to the same plan.

The configs are written from zen's documented format (github.com/netra-systems/zen:
README, docs/ONBOARDING.md, examples/*.json, zen_orchestrator.py's InstanceConfig and
its `budget` section)."""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from sandbox_orch.agents.convert import render_workflow, zen_yaml
from sandbox_orch.agents.zen import is_zen
from sandbox_orch.cli import main
from sandbox_orch.errors import InputRefused
from sandbox_orch.loading import load_workflow
from sandbox_orch.planning import make_plan
from sandbox_orch.yamlsafe import load_text

WORKSPACE_MOUNT = [{"source": ".", "target": "/workspace", "mode": "ro"}]

# Every instance field zen documents, in the shape of its examples/code_review.json.
FULL = """\
{
  "// Description": "Multi-file code review",
  "instances": [
    {
      "name": "Security Reviewer",
      "command": "/security-audit all code changes; Check for XSS",
      "description": "Performs a security analysis of code changes",
      "permission_mode": "bypassPermissions",
      "output_format": "stream-json",
      "max_tokens_per_command": 15000,
      "allowed_tools": ["Read", "Glob", "Grep"],
      "session_id": null,
      "clear_history": false,
      "compact_history": false,
      "pre_commands": ["Set context: a security review", "Focus: authentication"]
    },
    {
      "prompt": "What are the available commands in this repository?",
      "permission_mode": "plan"
    },
    {
      "name": "tests",
      "command": "/runtests all, unit",
      "max_tokens_per_command": 8000
    }
  ],
  "budget": {
    "overall_budget": 50000,
    "overall_cost_budget": 2.5,
    "enforcement_mode": "block",
    "budget_type": "mixed",
    "disable_visuals": true,
    "command_budgets": {"/runtests": 6000},
    "command_cost_budgets": {"/security-audit": 0.75}
  }
}
"""


def write(tmp_path: Path, text: str, name: str = "cfg.json") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def workflow_of(tmp_path: Path, text: str, environ: dict[str, str] | None = None):
    document, workflow = load_workflow(write(tmp_path, text), environ or {})
    return document, workflow


def refusals(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(InputRefused) as caught:
        load_workflow(path, {})
    return [str(p).removeprefix(f"{path}:") for p in caught.value.problems]


def one_instance(**fields) -> str:
    instance = {"name": "job", "command": "/review", **fields}
    return json.dumps({"instances": [instance]}, indent=2)


def test_every_documented_field_maps_to_the_workflow(tmp_path):
    document, workflow = workflow_of(tmp_path, FULL)
    assert document.data == {
        "version": 1,
        "name": "zen-cfg",
        "budget": {
            "tokens": {"limit": 50000, "mode": "block"},
            "usd": {"limit": 2.5, "mode": "block"},
        },
        "nodes": {
            "security-reviewer": {
                "runtime": "claude",
                # what zen hands `claude -p`: pre_commands, then the command, by "; "
                "prompt": "Set context: a security review; Focus: authentication; "
                "/security-audit all code changes; Check for XSS",
                "agent": {
                    "permission_mode": "bypassPermissions",
                    "allowed_tools": ["Read", "Glob", "Grep"],
                },
                "budget": {
                    "tokens": {"limit": 15000, "mode": "block"},
                    "usd": {"limit": 0.75, "mode": "block"},
                },
                "mounts": WORKSPACE_MOUNT,
                "workdir": "/workspace",
            },
            # zen's default name: a prompt's first 30 characters
            "what-are-the-available-command": {
                "runtime": "claude",
                "prompt": "What are the available commands in this repository?",
                "agent": {"permission_mode": "plan"},
                "mounts": WORKSPACE_MOUNT,
                "workdir": "/workspace",
            },
            "tests": {
                "runtime": "claude",
                "prompt": "/runtests all, unit",
                # zen: an explicit command budget wins over max_tokens_per_command
                "budget": {"tokens": {"limit": 6000, "mode": "block"}},
                "mounts": WORKSPACE_MOUNT,
                "workdir": "/workspace",
            },
        },
    }
    # ... and validates as a workflow: the agent block and budgets are the real models
    node = workflow.nodes["security-reviewer"]
    assert node.agent is not None and node.agent.allowed_tools == ["Read", "Glob", "Grep"]
    assert node.budget is not None and node.budget.usd is not None
    assert node.budget.usd.limit == 0.75 and workflow.budget is not None


def test_the_plan_runs_the_claude_cli_with_the_joined_prompt_in_parallel(tmp_path):
    document, workflow = workflow_of(tmp_path, FULL)
    plan = make_plan(document, workflow)
    assert plan.levels == [sorted(plan.nodes)]  # all parallel, as in zen
    node = plan.nodes["tests"]
    assert node.argv[:2] == ("claude", "-p") and node.argv[-2:] == ("--", "/runtests all, unit")
    assert node.secrets == ("ANTHROPIC_API_KEY",)
    assert node.egress == ("api.anthropic.com:443",)


def test_results_record_the_zen_file_itself(tmp_path):
    path = write(tmp_path, FULL)
    document, _ = load_workflow(path, {})
    assert document.path == str(path)
    assert document.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_zen_default_enforcement_warns(tmp_path):
    document, _ = workflow_of(
        tmp_path,
        '{"instances": [{"command": "/a", "max_tokens_per_command": 100}],'
        ' "budget": {"overall_budget": 1000}}',
    )
    assert document.data["budget"] == {"tokens": {"limit": 1000, "mode": "warn"}}
    assert document.data["nodes"]["a"]["budget"] == {"tokens": {"limit": 100, "mode": "warn"}}


def test_a_gateway_in_the_environment_reaches_every_node_and_decides_egress(tmp_path):
    document, workflow = workflow_of(
        tmp_path, one_instance(), {"ANTHROPIC_BASE_URL": "http://10.1.2.3:8080"}
    )
    assert document.data["defaults"] == {"env": {"ANTHROPIC_BASE_URL": "http://10.1.2.3:8080"}}
    node = make_plan(document, workflow).nodes["job"]
    assert node.env == {"ANTHROPIC_BASE_URL": "http://10.1.2.3:8080"}
    assert node.egress == ("10.1.2.3:8080",)


def test_names_follow_the_node_name_rule_and_stay_unique(tmp_path):
    config = {
        "instances": [
            {"name": "Code Review!", "command": "/a"},
            {"name": "code-review", "command": "/b"},
            {"name": "__x__", "command": "/c"},
            {"name": "é" * 3, "command": "/d"},
            {"name": "L" * 80, "command": "/e"},
            {"name": "l" * 80, "command": "/f"},
            {"command": "/gitcommitgardener now"},
        ]
    }
    document, _ = workflow_of(tmp_path, json.dumps(config))
    assert list(document.data["nodes"]) == [
        "code-review",
        "code-review-2",
        "x",
        "instance",
        "l" * 63,
        "l" * 61 + "-2",
        "gitcommitgardener-now",
    ]


def test_many_names_that_clean_up_alike_stay_unique(tmp_path):
    config = {"instances": [{"name": "a" + "!" * i, "command": "/x"} for i in range(1000)]}
    document, _ = workflow_of(tmp_path, json.dumps(config))
    assert list(document.data["nodes"]) == ["a"] + [f"a-{n}" for n in range(2, 1001)]


def test_more_instances_than_a_workflow_may_have_nodes_are_refused(tmp_path):
    config = {"instances": [{"command": f"/x{i}"} for i in range(1001)]}
    assert refusals(tmp_path, json.dumps(config)) == ["1: instances: at most 1000 instances"]


@pytest.mark.parametrize("url", ["http://h:99999", "ftp://h", "http://", "http://[::1"])
def test_an_unusable_gateway_in_the_environment_is_refused(tmp_path, url):
    with pytest.raises(InputRefused) as caught:
        load_workflow(write(tmp_path, one_instance()), {"ANTHROPIC_BASE_URL": url})
    (problem,) = caught.value.problems
    assert str(problem).startswith("$ANTHROPIC_BASE_URL: not a usable URL")


def test_the_workflow_is_named_after_the_file_without_control_characters(tmp_path):
    _, workflow = load_workflow(write(tmp_path, one_instance(), "a\nb.json"), {})
    assert workflow.name == "zen-a_b"


def test_comment_keys_and_false_or_null_settings_are_accepted(tmp_path):
    text = one_instance(
        session_id=None, clear_history=False, compact_history=False, output_format=None
    )
    config = {"// Use Case": "x", **json.loads(text)}
    document, _ = workflow_of(tmp_path, json.dumps(config))
    assert list(document.data["nodes"]) == ["job"]


def test_a_json_file_indented_with_tabs_loads(tmp_path):
    document, _ = workflow_of(tmp_path, '{\n\t"instances": [\n\t\t{"command": "/a"}\n\t]\n}\n')
    assert list(document.data["nodes"]) == ["a"]
    assert document.line_of(("nodes", "a")) == 3


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"session_id": "security_review_session"},
            "6: instances[0].session_id: a Claude session lives and dies with its node's sandbox",
        ),
        (
            {"clear_history": True},
            "6: instances[0].clear_history: every node already starts with no history",
        ),
        (
            {"compact_history": True},
            "6: instances[0].compact_history: a node has no earlier conversation to compact",
        ),
        ({"compact_history": "yes"}, "6: instances[0].compact_history: expected true or false"),
        (
            {"output_format": "json"},
            "6: instances[0].output_format: the claude runtime always reads stream-json",
        ),
        (
            {"prompt": "and this"},
            "6: instances[0].prompt: give command or prompt, not both",
        ),
        ({"model": "opus"}, "6: instances[0].model: unknown key"),
        ({"pre_commands": "/clear"}, "6: instances[0].pre_commands: expected a list"),
        ({"pre_commands": ["/clear", ""]}, "6: instances[0].pre_commands: expected a list"),
        ({"description": 7}, "6: instances[0].description: expected a string"),
        ({"command": ""}, "5: instances[0].command: expected a non-empty string"),
        ({"command": ["/a"]}, "5: instances[0].command: expected a non-empty string"),
        ({"name": " "}, "4: instances[0].name: expected a non-empty string"),
    ],
)
def test_fields_that_cannot_mean_the_same_are_refused_with_their_line(tmp_path, fields, expected):
    found = refusals(tmp_path, one_instance(**fields))
    assert len(found) == 1 and found[0].startswith(expected), found


def test_an_instance_without_a_task_is_refused(tmp_path):
    found = refusals(tmp_path, '{"instances": [\n  {"name": "x"}\n]}')
    assert found == ["2: instances[0]: an instance needs a command or a prompt"]


def test_the_config_shape_is_checked(tmp_path):
    assert refusals(tmp_path, '{"instances": []}') == [
        "1: instances: expected a list of at least one instance"
    ]
    assert refusals(tmp_path, '{"instances": ["/a"]}') == [
        "1: instances[0]: an instance is a mapping"
    ]
    found = refusals(tmp_path, '{"instances": [{"command": "/a"}],\n "workspace": "~/x"}')
    assert found == ["2: workspace: unknown key (a zen config has instances and budget)"]


def test_duplicate_names_are_refused_as_zen_would_drop_one(tmp_path):
    found = refusals(
        tmp_path,
        '{"instances": [\n{"name": "a", "command": "/x"},\n{"name": "a", "command": "/y"}]}',
    )
    assert found == [
        "3: instances[1].name: instances[0] has the same name; zen would run only the "
        "last of them: give each instance its own name"
    ]


def test_budget_section_refusals(tmp_path):
    text = """\
    {"instances": [{"command": "/a x"}, {"command": "/b"}, {"command": "/b again"}],
     "budget": {
       "enforcement_mode": "stop",
       "budget_type": "dollars",
       "disable_visuals": "no",
       "command_budgets": {"/a": 10, "/b": 20, "/c": 30},
       "command_cost_budgets": [1],
       "per_instance": 5
     }}
    """
    assert refusals(tmp_path, text) == [
        "3: budget.enforcement_mode: expected warn or block",
        "4: budget.budget_type: expected tokens, cost or mixed",
        "5: budget.disable_visuals: expected true or false",
        "6: budget.command_budgets./b: more than one instance runs this command; budgets "
        "here are per node or per run: give each instance max_tokens_per_command instead",
        "6: budget.command_budgets./c: no instance runs this command",
        "7: budget.command_cost_budgets: expected a mapping from command to limit",
        "8: budget.per_instance: unknown key (see docs/zen-migration.md)",
    ]


def test_values_the_workflow_models_refuse_name_the_zen_field_and_line(tmp_path):
    text = """\
    {"instances": [
      {"command": "/a",
       "permission_mode": "yolo",
       "allowed_tools": ["Read", "Bash\\n"],
       "max_tokens_per_command": 1.5},
      {"command": "/b", "max_tokens_per_command": 0},
      {"command": "/c", "max_tokens_per_command": 5}],
     "budget": {"overall_cost_budget": -1, "command_budgets": {"/c": true}}}
    """
    found = refusals(tmp_path, text)
    assert found[0].startswith("3: instances[0].permission_mode: Input should be 'default'")
    assert found[1].startswith("4: instances[0].allowed_tools[1]: String should match")
    assert found[2:] == [
        "5: instances[0].max_tokens_per_command: expected a whole number",
        "6: instances[1].max_tokens_per_command: expected a whole number from 1 to 1000000000000",
        "8: budget.command_budgets./c: expected a whole number",
        "8: budget.overall_cost_budget: an amount of US dollars is finite and above 0",
    ]


def test_a_workflow_with_instances_is_not_a_zen_config(tmp_path):
    found = refusals(tmp_path, 'version: 1\nname: x\ninstances: []\nnodes: {a: {command: "x"}}\n')
    assert found == ["3: instances: unknown key"]
    assert not is_zen({"instances": [], "nodes": {}}) and is_zen({"instances": []})


def plan_summary(plan):
    return {
        name: (n.argv, n.env, n.egress, n.secrets, n.request, n.needs, n.timeout)
        for name, n in plan.nodes.items()
    }


@pytest.mark.parametrize("environ", [{}, {"ANTHROPIC_BASE_URL": "http://10.0.0.9:8080"}])
def test_convert_round_trip_gives_the_same_plan(tmp_path, environ):
    config = write(tmp_path, FULL)
    text = zen_yaml(config, environ)
    assert "  # Performs a security analysis of code changes\n  security-reviewer:\n" in text
    converted = write(tmp_path, text, "converted.yaml")
    yaml_document, yaml_workflow = load_workflow(converted, environ)
    zen_document, zen_workflow = load_workflow(config, environ)
    assert yaml_workflow == zen_workflow
    assert plan_summary(make_plan(yaml_document, yaml_workflow)) == plan_summary(
        make_plan(zen_document, zen_workflow)
    )


HOSTILE = [
    "0o17",
    "017",
    "true",
    "null",
    "~",
    "- item",
    "a: b",
    "# not a comment",
    "x\ny: 1",
    "line\u2028break",
    "tab\there",
    '"quoted"',
    "{flow}",
    "*alias",
    "!tag",
    "",
    " padded ",
    "1e3",
    ".nan",
]


def test_rendered_yaml_reads_back_exactly_whatever_the_strings(tmp_path):
    workflow = {
        "version": 1,
        "name": "x",
        "nodes": {f"n{i}": {"runtime": "claude", "prompt": s} for i, s in enumerate(HOSTILE)},
    }
    comments = {f"n{i}": s for i, s in enumerate(HOSTILE)}
    text = render_workflow(workflow, ["head\nversion: 2"], comments)
    assert load_text(text, "x.yaml").data == workflow


def test_cli_convert_prints_yaml_and_refuses_with_exit_2(tmp_path, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    good = write(tmp_path, FULL)
    result = CliRunner().invoke(main, ["convert", "zen", str(good)])
    assert result.exit_code == 0, result.output
    assert load_text(result.output, "out.yaml").data["name"] == "zen-cfg"
    bad = write(tmp_path, one_instance(session_id="s1"), "bad.json")
    result = CliRunner().invoke(main, ["convert", "zen", str(bad)])
    assert result.exit_code == 2
    assert result.output.startswith(f"{bad}:6: instances[0].session_id: ")
    workflow = write(tmp_path, "version: 1\nname: x\nnodes: {a: {command: x}}\n", "wf.yaml")
    result = CliRunner().invoke(main, ["convert", "zen", str(workflow)])
    assert result.exit_code == 2 and "not a zen config" in result.output


def test_cli_validate_takes_a_zen_config(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    policy = Path(__file__).parents[2] / "policies" / "agents.yaml"
    # the shipped agents policy allows no bypassPermissions: refused where zen wrote it
    config = write(tmp_path, FULL)
    result = CliRunner().invoke(main, ["validate", str(config), "--policy", str(policy)])
    assert result.exit_code == 2
    assert f"{config}:8: instances[0].permission_mode: " in result.output
    config = write(tmp_path, FULL.replace('"bypassPermissions"', '"acceptEdits"'))
    args = ["validate", str(config), "--policy", str(policy), "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # stderr: warnings (its slash commands are absent)
    assert summary["workflow"] == "zen-cfg" and len(summary["nodes"]) == 3
    # the same admission: the default policy grants no claude runtime
    result = CliRunner().invoke(main, ["validate", str(config)])
    assert result.exit_code == 2
    assert f"{config}:4: instances[0]: node 'security-reviewer': " in result.output


def test_a_zen_prompt_is_text_never_a_template(tmp_path, monkeypatch):
    """zen sends its prompt as written: `${{ ... }}` in it is not an expression here."""
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    config = write(tmp_path, '{"instances": [{"prompt": "explain ${{ secrets.TOKEN }} in CI"}]}')
    _, workflow = load_workflow(config)
    plan = make_plan(*load_workflow(config))
    (node,) = plan.nodes.values()
    assert node.prompt is None and "explain ${{ secrets.TOKEN }} in CI" in node.argv
    assert workflow.nodes[node.name].prompt == "explain $${{ secrets.TOKEN }} in CI"
