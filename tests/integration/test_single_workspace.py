"""`single`'s workspace round trip on the real engine, as a user runs it: the command line
in a child process, a shell node that edits /workspace, then the printed command, --apply
or --branch. Runtime-independent (the copy and the patch are host-side), so runc only."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import REPO

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]
DEFAULT_POLICY = REPO / "policies" / "default.yaml"
PNG = bytes(range(256)) + b"\x89PNG\r\n\x1a\n\0\0"


def git(root: Path, *args: str) -> str:
    return subprocess.run([*GIT, "-C", str(root), *args], capture_output=True, check=True,
                          text=True).stdout  # fmt: skip


def single(cwd: Path, script: str, *options: str, wait: bool = True, policy: Path = DEFAULT_POLICY):
    """`python -m sandbox_orch single shell ... -- sh -c SCRIPT`, run from `cwd`."""
    argv = [sys.executable, "-m", "sandbox_orch", "single", "shell", "--ci",
            "--policy", str(policy), *options, "--", "sh", "-c", script]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if not wait:
        return subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SANDBOX_ORCH_HOME", str(tmp_path / "store"))
    root = tmp_path / "repo"
    (root / "sub").mkdir(parents=True)
    (root / ".gitignore").write_text(".venv/\n*.o\n")
    (root / "sub" / "code.txt").write_text("one\n")
    (root / "README").write_text("top\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    (root / ".venv").mkdir()
    (root / ".venv" / "huge.py").write_text("ignored\n")
    (root / "old.o").write_text("ignored\n")
    return root


def patch_of(stdout: str) -> tuple[Path, str]:
    """The patch's path and the printed command that applies it."""
    found = re.search(r"^changes: (\S+) \(\d+ bytes; apply with: (.+)\)$", stdout, re.M)
    assert found, stdout
    return Path(found[1]), found[2]


def test_from_a_subdirectory_ignored_files_stay_out_and_the_printed_command_applies(repo):
    """Run from repo/sub with no --workspace: the repository's root is copied, without its
    ignored files; a binary file, an executable bit and a symlink come back through the
    printed `git -C ROOT apply`, run from the subdirectory, byte for byte; what the node
    writes that .gitignore ignores is not in the patch."""
    octal = "".join(f"\\{b:03o}" for b in PNG)
    script = (
        "set -e; cd /workspace; test -f README; test -f sub/code.txt; test ! -e .venv; "
        f"test ! -e old.o; printf '{octal}' > sub/image.png; echo two >> sub/code.txt; "
        "printf '#!/bin/sh\\n' > sub/tool.sh; chmod 755 sub/tool.sh; ln -s code.txt sub/link; "
        "mkdir -p .venv/lib; echo x > .venv/lib/new.py; echo x > build.o"
    )
    proc = single(repo / "sub", script)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    patch, command = patch_of(proc.stdout)
    assert command == f"git -C {shlex.quote(str(repo))} apply {shlex.quote(str(patch))}"
    text = patch.read_bytes()
    assert b".venv" not in text and b"build.o" not in text
    applied = subprocess.run(shlex.split(command), cwd=repo / "sub", capture_output=True)
    assert applied.returncode == 0, applied.stderr
    assert (repo / "sub" / "image.png").read_bytes() == PNG
    assert (repo / "sub" / "code.txt").read_text() == "one\ntwo\n"
    assert os.access(repo / "sub" / "tool.sh", os.X_OK)
    assert os.readlink(repo / "sub" / "link") == "code.txt"


def test_no_change_says_so_and_writes_no_patch(repo, tmp_path):
    results = tmp_path / "results.json"
    proc = single(repo, "echo x > /workspace/ignored.o", "--results", str(results))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("no changes") and "changes: " not in proc.stdout
    assert json.loads(results.read_text())["nodes"]["single"]["artifacts"] == []
    assert not list((tmp_path / "store").glob("runs/*/artifacts/single/changes.patch"))


def test_exclude_leaves_patterns_out_of_the_copy_and_the_patch(repo):
    script = "test ! -e /workspace/README && test -f /workspace/sub/code.txt && echo x > /workspace/a.log"
    proc = single(repo, script, "--exclude", "README", "--exclude", "*.log")
    assert proc.returncode == 0, proc.stderr + proc.stdout  # README was not in the copy
    assert proc.stdout.strip().endswith("no changes")  # nor a.log in the patch


def test_apply_changes_the_workspace_when_it_is_unchanged(repo):
    proc = single(repo, "echo two >> /workspace/sub/code.txt", "--apply")
    assert proc.returncode == 0, proc.stderr
    assert f"applied to {repo}" in proc.stdout
    assert (repo / "sub" / "code.txt").read_text() == "one\ntwo\n"


def test_apply_keeps_the_patch_when_the_workspace_changed_meanwhile(repo, tmp_path):
    """The node edits its copy, says so with a marker, and waits for the test's `go`
    (polled, bounded); meanwhile the user edits the workspace: nothing is applied."""
    script = (
        "cd /workspace; echo two >> sub/code.txt; touch started; i=0; "
        "while [ ! -e go ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; rm -f go started"
    )
    child = single(repo, script, "--apply", wait=False)
    started = None
    deadline = time.monotonic() + 90
    while started is None and time.monotonic() < deadline and child.poll() is None:
        started = next((tmp_path / "store").glob("runs/*/single/work/started"), None)
        time.sleep(0.05)  # between polls of the marker, not instead of it
    assert started is not None, child.communicate()
    (repo / "README").write_text("edited by the user meanwhile\n")
    (started.parent / "go").touch()
    out, err = child.communicate(timeout=90)
    assert child.returncode == 0, err
    assert "not applied: the workspace changed since it was copied (README)" in out
    assert (repo / "sub" / "code.txt").read_text() == "one\n"
    patch, _ = patch_of(out)
    assert b"+two" in patch.read_bytes()


def test_branch_commits_the_changes_and_leaves_the_tree_alone(repo):
    head = git(repo, "rev-parse", "HEAD")
    proc = single(repo, "echo two >> /workspace/sub/code.txt", "--branch", "agent/try")
    assert proc.returncode == 0, proc.stderr
    assert "committed on branch agent/try" in proc.stdout
    assert git(repo, "show", "agent/try:sub/code.txt") == "one\ntwo\n"
    assert git(repo, "rev-parse", "agent/try^") == head
    assert git(repo, "rev-parse", "HEAD") == head and git(repo, "symbolic-ref", "HEAD").strip() \
        == "refs/heads/main"  # fmt: skip
    assert (repo / "sub" / "code.txt").read_text() == "one\n"
    assert git(repo, "status", "--porcelain") == ""


def test_an_existing_branch_is_refused_before_anything_starts(repo):
    proc = single(repo, "echo two >> /workspace/sub/code.txt", "--branch", "main")
    assert proc.returncode == 2, proc.stderr
    assert "--branch: branch 'main' already exists" in proc.stderr
    assert not (repo.parent / "store" / "runs").exists() or not list(
        (repo.parent / "store").glob("runs/*/results.json")
    )


@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_a_node_cannot_make_the_host_read_outside_its_copy_or_run_a_filter(repo, tmp_path, runtime):
    """The attack: the node replaces a tracked directory with a symlink to /etc (hoping
    the host reads /etc/passwd into the patch while computing it) and plants a
    .gitattributes and a .git/config whose filter and textconv would run a command on the
    host. The patch shows the symlink as a link; nothing outside the copy is read; no
    command runs."""
    policy = tmp_path / f"policy-{runtime}.yaml"
    text = (REPO / "policies" / "default.yaml").read_text()
    policy.write_text(text.replace("oci_runtime: runc", f"oci_runtime: {runtime}"))
    marker = tmp_path / "filter-ran"
    config = (
        f'[filter "x"]\\n\\tclean = touch {marker}\\n[diff "x"]\\n\\ttextconv = touch {marker}\\n'
    )
    script = (
        "set -e; cd /workspace; rm -rf sub; ln -s /etc sub; echo '* filter=x diff=x' > "
        f".gitattributes; mkdir .git; printf '{config}' > .git/config; echo new > README"
    )
    proc = single(repo, script, policy=policy)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    patch, _ = patch_of(proc.stdout)
    text = patch.read_text()
    assert "new file mode 120000" in text and "+/etc" in text  # the link, as a link
    assert "root:" not in text and "passwd" not in text
    assert ".git/config" not in text
    assert not marker.exists()
