"""Read-write mounts keep what the host's git runs read-only (issue 10 item 3 follow-up):
the walk finds git directories, `.git` files and the git directories they name, bare
repositories and configured hooks directories; admission turns them into read-only binds
and refuses a read-write source inside a git directory. Pure: no engine, no git."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sandbox_orch import admission
from sandbox_orch.backend.settings import _kept_read_only
from sandbox_orch.errors import InputRefused
from sandbox_orch.gitpaths import MAX_GIT_PATHS, inside_git
from sandbox_orch.mounts import BindMount, walk
from sandbox_orch.policy import MountGrant

from .helpers import default_policy, plan_of


def git_dir(path: Path, config: str = "") -> Path:
    """The layout git itself recognises (HEAD, objects/, refs/), as `git init` leaves it."""
    (path / "objects").mkdir(parents=True)
    (path / "refs").mkdir()
    (path / "hooks").mkdir()
    (path / "HEAD").write_text("ref: refs/heads/main\n")
    (path / "config").write_text(config)
    return path


def test_a_repository_s_git_directory_is_found(tmp_path):
    git_dir(tmp_path / ".git")
    (tmp_path / "src").mkdir()
    assert walk(tmp_path).git == (".git",)


def test_nested_repositories_and_git_directories_named_otherwise(tmp_path):
    git_dir(tmp_path / ".git")
    git_dir(tmp_path / "vendor" / "lib" / ".git")  # a nested clone
    git_dir(tmp_path / "remotes" / "origin.git")  # a bare repository, found by content
    git_dir(tmp_path / ".git" / "modules" / "sub")  # inside .git: covered by it
    assert walk(tmp_path).git == (".git", "remotes/origin.git", "vendor/lib/.git")


def test_an_empty_or_partial_dot_git_is_kept_too(tmp_path):
    """Writable, a node would complete it into a repository the user owns."""
    (tmp_path / "a" / ".git").mkdir(parents=True)
    assert walk(tmp_path).git == ("a/.git",)


def test_a_dot_git_file_and_the_git_directory_it_names(tmp_path):
    """A worktree or submodule: the file (a node would point it elsewhere) and its git
    directory when inside the source; outside it, the node cannot reach it anyway."""
    git_dir(tmp_path / "store" / "wt")
    (tmp_path / "wt").mkdir()
    (tmp_path / "wt" / ".git").write_text("gitdir: ../store/wt\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".git").write_text(f"gitdir: {tmp_path.parent}/elsewhere\n")
    assert walk(tmp_path).git == ("out/.git", "store/wt", "wt/.git")


def test_a_hooks_directory_the_config_names(tmp_path):
    """husky and others set core.hooksPath to a directory in the work tree."""
    git_dir(tmp_path / ".git", '[core]\n\tbare = false\n\thooksPath = ".husky/_"\n')
    (tmp_path / ".husky" / "_").mkdir(parents=True)
    git_dir(tmp_path / "b" / ".git", "[CORE]\nHOOKSPATH=../hooks-b # comment\n")
    (tmp_path / "hooks-b").mkdir()
    assert walk(tmp_path).git == (".git", ".husky/_", "b/.git", "hooks-b")


def test_a_fifo_named_dot_git_or_config_never_blocks_the_walk(tmp_path):
    import os

    os.mkfifo(tmp_path / ".git")
    (tmp_path / "r" / ".git").mkdir(parents=True)
    os.mkfifo(tmp_path / "r" / ".git" / "config")
    assert walk(tmp_path).git == ("r/.git",)


def test_a_source_inside_a_git_directory(tmp_path):
    git_dir(tmp_path / ".git")
    git_dir(tmp_path / "bare.git")
    assert inside_git(tmp_path / ".git" / "hooks") == tmp_path / ".git"
    assert inside_git(tmp_path / ".git") == tmp_path / ".git"
    assert inside_git(tmp_path / "bare.git" / "hooks") == tmp_path / "bare.git"
    assert inside_git(tmp_path) is None


def rw_policy():
    return dataclasses.replace(default_policy(), mounts=(MountGrant(Path("."), ("ro", "rw")),))


def admit_text(tmp_path: Path, mounts: str):
    text = f"version: 1\nname: x\nnodes:\n  n: {{command: [x], mounts: {mounts}}}\n"
    plan = plan_of(text, path=str(tmp_path / "wf.yaml"))
    return admission.admit(plan, rw_policy())["n"]


def test_read_write_mounts_keep_git_read_only_read_only_mounts_need_not(tmp_path):
    git_dir(tmp_path / ".git")
    sandbox = admit_text(
        tmp_path, "[{source: ., target: /w, mode: rw}, {source: ., target: /r, mode: ro}]"
    )
    rw, ro = sandbox.mounts
    assert rw.read_only_inside == (".git",) and ro.read_only_inside == ()
    (bind,) = _kept_read_only(rw)
    assert bind == BindMount(f"{tmp_path.resolve()}/.git", "/w/.git", True)
    assert sandbox.describe()["mounts"][0]["read_only_inside"] == ["/w/.git"]


def test_a_deeper_mount_of_the_node_over_a_git_directory_decides_what_is_there(tmp_path):
    git_dir(tmp_path / "a" / ".git")
    git_dir(tmp_path / "b" / ".git")
    (tmp_path / "other").mkdir()
    sandbox = admit_text(
        tmp_path, "[{source: ., target: /w, mode: rw}, {source: other, target: /w/a, mode: ro}]"
    )
    assert sandbox.mounts[0].read_only_inside == ("b/.git",)


def test_an_artifact_or_input_over_a_git_directory_decides_what_is_there(tmp_path):
    """Two mounts at one target would make the engine refuse the container."""
    git_dir(tmp_path / "a" / ".git")
    git_dir(tmp_path / "b" / ".git")
    text = (
        "version: 1\nname: x\nnodes:\n"
        "  p: {command: [x], outputs: {artifacts: [{name: d, path: /o}]}}\n"
        "  n: {command: [x], needs: [p], mounts: [{source: ., target: /w, mode: rw}],\n"
        "      outputs: {artifacts: [{name: e, path: /w/a/.git}]}}\n"
    )
    plan = plan_of(text, path=str(tmp_path / "wf.yaml"))
    sandbox = admission.admit(plan, rw_policy())["n"]
    assert sandbox.mounts[0].read_only_inside == ("b/.git",)


@pytest.mark.parametrize("source", [".git", ".git/hooks", "bare.git", "bare.git/refs"])
def test_a_git_directory_is_never_mounted_read_write(tmp_path, source):
    git_dir(tmp_path / ".git")
    git_dir(tmp_path / "bare.git")
    with pytest.raises(InputRefused) as refused:
        admit_text(tmp_path, f"[{{source: {source}, target: /w, mode: rw}}]")
    assert "is a git directory" in str(refused.value) and "mounts[0].source" in str(refused.value)
    assert admit_text(tmp_path, f"[{{source: {source}, target: /w, mode: ro}}]").mounts


def test_too_many_git_directories_for_a_read_write_mount(tmp_path):
    for i in range(MAX_GIT_PATHS + 1):
        (tmp_path / f"r{i}" / ".git").mkdir(parents=True)
    with pytest.raises(InputRefused) as refused:
        admit_text(tmp_path, "[{source: ., target: /w, mode: rw}]")
    assert f"more than {MAX_GIT_PATHS} git directories" in str(refused.value)
    assert admit_text(tmp_path, "[{source: ., target: /w, mode: ro}]").mounts


def test_files_a_config_includes_in_the_work_tree(tmp_path):
    """`[include] path = ../.gitconfig.project` (relative to the config): a node writing
    it would set core.fsmonitor as surely as in .git/config. Followed through includes."""
    git_dir(
        tmp_path / ".git",
        '[include]\n\tpath = ../project.gitconfig\n[includeIf "gitdir:/x/"]\n\tpath = ../b.inc\n',
    )
    (tmp_path / "project.gitconfig").write_text("[include]\n\tpath = nested/c.inc\n")
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "c.inc").write_text("[core]\n\tpager = less\n")
    (tmp_path / "b.inc").write_text("")
    assert walk(tmp_path).git == (".git", "b.inc", "nested/c.inc", "project.gitconfig")


def test_what_the_user_s_own_git_config_names_inside_a_source(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    source = tmp_path / "projects"
    (source / "hooks").mkdir(parents=True)
    (source / "shared.inc").write_text("")
    (home / ".gitconfig").write_text(
        f"[core]\n\thooksPath = {source}/hooks\n[include]\n\tpath = {source}/shared.inc\n"
        "[core]\n\thooksPath = relative-to-each-repo\n"
    )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    assert walk(source).git == ("hooks", "shared.inc")
