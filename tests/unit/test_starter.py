"""`sandbox-orch init`: the starter files, admitted by each other, never overwritten unasked."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from sandbox_orch.admission import admit
from sandbox_orch.cli import main
from sandbox_orch.errors import InputRefused
from sandbox_orch.loading import load_workflow
from sandbox_orch.planning import make_plan
from sandbox_orch.policy import load_policy
from sandbox_orch.starter import POLICY, WORKFLOW, write_starter

REFUSAL = "exists; not overwritten (--force overwrites)"


def test_writes_both_files_and_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["init"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "wrote workflow.yaml (a starter workflow)",
        "wrote policy.yaml (a starter policy, the grants that workflow needs)",
        "next: sandbox-orch run workflow.yaml --policy policy.yaml",
    ]
    assert (tmp_path / "workflow.yaml").read_text() == WORKFLOW
    assert (tmp_path / "policy.yaml").read_text() == POLICY


def test_a_directory_is_created_and_named_in_the_next_command(tmp_path):
    target = tmp_path / "new" / "project"
    result = CliRunner().invoke(main, ["init", str(target)])
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(target)) == ["policy.yaml", "workflow.yaml"]
    assert result.stdout.splitlines()[-1] == (
        f"next: sandbox-orch run {target}/workflow.yaml --policy {target}/policy.yaml"
    )


def test_the_starter_workflow_is_admitted_by_the_starter_policy(tmp_path):
    write_starter(tmp_path)
    plan = make_plan(*load_workflow(tmp_path / "workflow.yaml"))
    policy = load_policy(tmp_path / "policy.yaml")
    sandboxes = admit(plan, policy, environ={})  # raises InputRefused on any refusal
    assert set(sandboxes) == {"hello", "facts", "files"}
    assert policy.name == "starter"


@pytest.mark.parametrize("existing", ["workflow.yaml", "policy.yaml"])
def test_an_existing_file_refuses_and_nothing_is_written(tmp_path, existing):
    (tmp_path / existing).write_text("mine\n")
    result = CliRunner().invoke(main, ["init", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr == f"{tmp_path / existing}: {REFUSAL}\n"
    assert sorted(os.listdir(tmp_path)) == [existing]  # the other one is not written either
    assert (tmp_path / existing).read_text() == "mine\n"


def test_a_planted_symlink_counts_as_existing(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    (tmp_path / "workflow.yaml").symlink_to(victim)
    with pytest.raises(InputRefused, match=r"workflow\.yaml: exists"):
        write_starter(tmp_path)
    assert victim.read_text() == "keep\n"


def test_force_replaces_the_files_not_what_a_symlink_points_to(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    (tmp_path / "workflow.yaml").symlink_to(victim)
    (tmp_path / "policy.yaml").write_text("old\n")
    result = CliRunner().invoke(main, ["init", str(tmp_path), "--force"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "workflow.yaml").is_symlink()
    assert (tmp_path / "workflow.yaml").read_text() == WORKFLOW
    assert (tmp_path / "policy.yaml").read_text() == POLICY
    assert victim.read_text() == "keep\n"
    assert sorted(os.listdir(tmp_path)) == ["policy.yaml", "victim", "workflow.yaml"]  # no temp


def test_an_unwritable_place_is_one_refusal_line(tmp_path):
    (tmp_path / "file").write_text("")
    result = CliRunner().invoke(main, ["init", str(tmp_path / "file" / "sub")])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"{tmp_path / 'file' / 'sub'}: cannot write: ")
    assert len(result.stderr.splitlines()) == 1


def test_a_file_where_the_directory_should_be_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    result = CliRunner().invoke(main, ["init", str(tmp_path / "file")])
    assert (result.exit_code, result.stderr) == (2, f"{tmp_path / 'file'}: not a directory\n")


def test_the_next_command_quotes_the_paths(tmp_path):
    target = tmp_path / "my project"
    result = CliRunner().invoke(main, ["init", str(target)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == (
        f"next: sandbox-orch run '{target}/workflow.yaml' --policy '{target}/policy.yaml'"
    )
