"""`validate` warns (exit 0, stderr) when a Claude node's prompt is a slash command the
node cannot run: no workspace mounted at its working directory, or the command is not
in the mounted workspace's .claude/commands."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from sandbox_orch.agents.commandcheck import slash_command
from sandbox_orch.cli import main

AGENTS_POLICY = Path(__file__).resolve().parents[2] / "policies" / "agents.yaml"


@pytest.mark.parametrize(
    ("prompt", "command"),
    [
        ("/review 12", "review"),
        ("/review", "review"),
        ("  /frontend:component Button", "frontend:component"),
        ("/fix-issue\nmore lines", "fix-issue"),
        ("/workspace/x.py is broken", None),
        ("review /review", None),
        ("/", None),
        ("//x", None),
        ("/a:b:", None),
    ],
)
def test_what_is_a_slash_command(prompt, command):
    assert slash_command(prompt) == command


def validate(tmp_path: Path, nodes: str, monkeypatch, *args: str):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "x")
    workflow = tmp_path / "wf.yaml"
    workflow.write_text(
        "version: 1\nname: slash\nnodes:\n" + textwrap.indent(textwrap.dedent(nodes), "  ")
    )
    return CliRunner().invoke(
        main, ["validate", str(workflow), "--policy", str(AGENTS_POLICY), *args]
    )


MOUNTED = "workdir: /workspace, mounts: [{source: ws, target: /workspace}]"


@pytest.fixture
def workspace(tmp_path):
    commands = tmp_path / "ws" / ".claude" / "commands"
    (commands / "frontend").mkdir(parents=True)
    (commands / "review.md").write_text("---\ndescription: r\n---\nReview $ARGUMENTS\n")
    (commands / "frontend" / "component.md").write_text("Make one\n")
    return tmp_path / "ws"


def test_a_command_the_node_can_see_gives_no_warning(tmp_path, workspace, monkeypatch):
    result = validate(
        tmp_path,
        f"""
        a: {{runtime: claude, prompt: "/review 12", {MOUNTED}}}
        b: {{runtime: claude, prompt: "/component", {MOUNTED}}}
        c: {{runtime: claude, prompt: "/frontend:component x", {MOUNTED}}}
        d: {{runtime: claude, prompt: "no command here"}}
        """,
        monkeypatch,
    )
    assert result.exit_code == 0, result.output
    assert result.stderr == ""


def test_no_workspace_at_the_workdir_is_warned_with_file_and_line(tmp_path, workspace, monkeypatch):
    result = validate(
        tmp_path,
        """
        plain: {runtime: claude, prompt: "/review 12"}
        elsewhere: {runtime: claude, prompt: "/review", mounts: [{source: ws, target: /data}]}
        """,
        monkeypatch,
    )
    assert result.exit_code == 0
    elsewhere, plain = result.stderr.splitlines()  # in the plan's order
    assert plain.startswith(f"{tmp_path / 'wf.yaml'}:5: nodes.plain.prompt: warning:")
    assert "no workspace is mounted at the node's working directory /home/sandbox" in plain
    assert elsewhere.startswith(f"{tmp_path / 'wf.yaml'}:6: nodes.elsewhere.prompt: warning:")
    assert result.stdout.startswith(f"{tmp_path / 'wf.yaml'}: valid")


def test_a_command_missing_from_the_mounted_workspace_is_warned(tmp_path, workspace, monkeypatch):
    result = validate(
        tmp_path, f'gone: {{runtime: claude, prompt: "/deploy prod", {MOUNTED}}}', monkeypatch
    )
    assert result.exit_code == 0
    assert "the slash command /deploy is not found in" in result.stderr
    assert str(workspace / ".claude" / "commands") in result.stderr


def test_a_workdir_below_the_mount_looks_there(tmp_path, workspace, monkeypatch):
    sub = workspace / "pkg" / ".claude" / "commands"
    sub.mkdir(parents=True)
    (sub / "only-here.md").write_text("x")
    nodes = """
    a: {runtime: claude, prompt: "/only-here", workdir: /workspace/pkg,
        mounts: [{source: ws, target: /workspace}]}
    b: {runtime: claude, prompt: "/only-here", workdir: /workspace,
        mounts: [{source: ws, target: /workspace}]}
    """
    result = validate(tmp_path, nodes, monkeypatch)
    assert result.exit_code == 0
    assert "nodes.a." not in result.stderr
    assert "nodes.b.prompt: warning: the slash command /only-here is not found" in result.stderr


def test_an_ambiguous_bare_name_and_a_missing_commands_directory(tmp_path, workspace, monkeypatch):
    (workspace / ".claude" / "commands" / "backend").mkdir()
    (workspace / ".claude" / "commands" / "backend" / "component.md").write_text("x")
    (tmp_path / "empty").mkdir()
    nodes = f"""
    a: {{runtime: claude, prompt: "/component", {MOUNTED}}}
    b: {{runtime: claude, prompt: "/x", workdir: /w, mounts: [{{source: empty, target: /w}}]}}
    """
    result = validate(tmp_path, nodes, monkeypatch)
    assert result.exit_code == 0
    assert "/component is ambiguous" in result.stderr
    assert "/x is not found:" in result.stderr and "does not exist" in result.stderr


def test_codex_and_shell_nodes_are_not_checked(tmp_path, workspace, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    result = validate(tmp_path, 'c: {runtime: codex, prompt: "/review"}', monkeypatch)
    assert result.exit_code == 0 and result.stderr == ""


def test_json_lists_the_warnings(tmp_path, workspace, monkeypatch):
    result = validate(
        tmp_path, 'plain: {runtime: claude, prompt: "/review"}', monkeypatch, "--json"
    )
    document = json.loads(result.stdout)
    assert document["valid"] is True
    assert len(document["warnings"]) == 1 and "warning:" in document["warnings"][0]


def test_a_refused_workflow_is_refused_before_any_warning(tmp_path, workspace, monkeypatch):
    result = validate(
        tmp_path, 'bad: {runtime: claude, prompt: "/nope", privileged: true}', monkeypatch
    )
    assert result.exit_code == 2
    assert "warning" not in result.stderr
