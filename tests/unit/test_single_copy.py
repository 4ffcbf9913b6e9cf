"""`single`'s workspace copy and its patch, with real git in temporary directories (no
engine): what is selected, what the copy holds, what the patch says, and that `git apply`
of it reproduces the node's result byte for byte (binary files, modes, symlinks)."""

from __future__ import annotations

import dataclasses
import io
import os
import stat
import subprocess
from pathlib import Path

import pytest

from sandbox_orch.errors import InputRefused
from sandbox_orch.single.changes import changes, write_patch
from sandbox_orch.single.selection import beyond_link, excluded, find_repo, select
from sandbox_orch.single.workspace import Progress, copy_workspace
from tests.unit.helpers import default_policy

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]
ODD = b"odd\nname \xff.txt"  # a newline and a byte that is no UTF-8


def git(root: Path, *args: str) -> str:
    done = subprocess.run([*GIT, "-C", str(root), *args], capture_output=True, check=True)
    return done.stdout.decode()


@pytest.fixture
def home(tmp_path, monkeypatch):
    store = tmp_path / "store"
    monkeypatch.setenv("SANDBOX_ORCH_HOME", str(store))
    return store


@pytest.fixture
def repo(tmp_path) -> Path:
    """A repository with tracked, ignored, untracked, executable, binary, symlinked and
    oddly named files, a deleted tracked file and a submodule-like gitlink."""
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    (root / ".gitignore").write_text(".venv/\n*.o\nbuild/\n")
    (root / "src" / "app.py").write_text("print('hi')\n")
    (root / "run.sh").write_text("#!/bin/sh\necho run\n")
    (root / "run.sh").chmod(0o755)
    (root / "logo.bin").write_bytes(bytes(range(256)) * 4)
    (root / "gone.txt").write_text("tracked, then deleted\n")
    (root / "tracked.o").write_text("tracked although ignored\n")
    os.symlink("src/app.py", root / "link")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "add", "-f", "tracked.o")
    commit = git(root, "commit-tree", git(root, "write-tree").strip(), "-m", "x").strip()
    git(root, "update-index", "--add", "--cacheinfo", f"160000,{commit},vendor/sub")
    git(root, "commit", "-qm", "init")
    (root / "vendor" / "sub").mkdir(parents=True)
    (root / "vendor" / "sub" / "inside.txt").write_text("a submodule's file\n")
    (root / "gone.txt").unlink()
    (root / ".venv" / "lib").mkdir(parents=True)
    (root / ".venv" / "lib" / "big.py").write_text("ignored\n")
    (root / "main.o").write_text("ignored\n")
    (root / "notes.md").write_text("untracked\n")
    (root / os.fsdecode(ODD)).write_text("odd\n")
    return root


def names(entries) -> set[bytes]:
    return {e.path for e in entries}


def test_a_repository_gives_what_git_would_keep(repo):
    selected = names(select(repo, find_repo(repo), (), None))
    assert selected == {
        b".gitignore", b"src/app.py", b"run.sh", b"logo.bin", b"tracked.o", b"link",
        b"vendor/sub", b"notes.md", ODD,
    }  # fmt: skip


def test_outside_git_everything_but_git_and_the_store(tmp_path):
    root = tmp_path / "plain"
    (root / ".git").mkdir(parents=True)
    (root / ".git" / "config").write_text("x")
    (root / ".sandbox-orch").mkdir()
    (root / ".sandbox-orch" / "r").write_text("x")
    (root / "store" / "runs").mkdir(parents=True)
    (root / "a.o").write_text("x")
    (root / ".gitignore").write_text("*.o\n")  # no repository: not a rule
    os.symlink("/etc", root / "etc-link")
    assert names(select(root, find_repo(root), (), b"store")) == {
        b"a.o",
        b".gitignore",
        b"etc-link",
    }


@pytest.mark.parametrize(
    ("path", "patterns", "expected"),
    [
        (b"a/node_modules/x.js", ("node_modules",), True),
        (b"a/b.log", ("*.log",), True),
        (b"a/b.log", ("a/*.log",), True),
        (b"c/a/b.log", ("a/*.log",), False),
        (b"docs/big/file", ("docs/big",), True),
        (b"docs/bigger", ("docs/big",), False),
        (b"src/app.py", ("*.log", "build"), False),
        (b"build", ("/build/",), True),
    ],
)
def test_exclude_patterns(path, patterns, expected):
    assert excluded(path, patterns) is expected


def test_exclude_applies_in_a_repository_too(repo):
    selected = names(select(repo, find_repo(repo), ("src", "*.bin"), None))
    assert b"src/app.py" not in selected and b"logo.bin" not in selected
    assert b"run.sh" in selected


def test_a_tracked_path_behind_a_symlinked_directory_is_never_followed(repo, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "app.py").write_text("secret\n")
    (repo / "src" / "app.py").unlink()
    (repo / "src").rmdir()
    os.symlink(outside, repo / "src")  # src/app.py now resolves outside the tree
    selected = names(select(repo, find_repo(repo), (), None))
    assert b"src/app.py" not in selected
    assert beyond_link(os.fsencode(repo), b"src/app.py", {})


def test_the_copy_holds_the_selection_with_modes_links_and_bytes(repo, home):
    copy = copy_workspace(repo, "r1", default_policy())
    work = copy.working
    assert not (work / ".venv").exists() and not (work / "main.o").exists()
    assert not (work / "gone.txt").exists() and not (work / ".git").exists()
    assert (work / "logo.bin").read_bytes() == (repo / "logo.bin").read_bytes()
    assert os.readlink(work / "link") == "src/app.py"
    assert os.stat(work / "run.sh").st_mode & stat.S_IXUSR
    assert not os.stat(work / "src" / "app.py").st_mode & stat.S_IXUSR
    assert (work / "vendor" / "sub").is_dir() and not list((work / "vendor" / "sub").iterdir())
    assert (Path(os.fsdecode(os.fsencode(work) + b"/" + ODD))).read_text() == "odd\n"
    assert changes(copy) == b""  # an untouched copy: no change


def test_the_copy_is_refused_above_the_artifacts_limit(repo, home):
    policy = default_policy()
    small = dataclasses.replace(policy, limits=dataclasses.replace(policy.limits, artifacts=10))
    with pytest.raises(InputRefused, match="artifacts limit"):
        copy_workspace(repo, "r1", small)
    assert not (home / "runs" / "r1" / "single").exists()


def node_edits(work: Path) -> None:
    """What a node might do: edit, delete, add binary, change modes, plant links, write
    ignored build outputs and files inside the submodule."""
    (work / "src" / "app.py").write_text("print('changed')\n")
    (work / "logo.bin").write_bytes(bytes(reversed(range(256))) * 8 + b"\0\xff")
    (work / "new.bin").write_bytes(os.urandom(3000))
    (work / "run.sh").chmod(0o644)
    (work / "tool.sh").write_text("#!/bin/sh\n")
    (work / "tool.sh").chmod(0o755)
    os.symlink("run.sh", work / "new-link")
    (work / "notes.md").unlink()
    (work / "build").mkdir()
    (work / "build" / "out.txt").write_text("ignored output\n")
    (work / ".venv" / "x").mkdir(parents=True)
    (work / ".venv" / "x" / "y.py").write_text("ignored\n")
    (work / "more.o").write_text("ignored\n")
    (work / "vendor" / "sub" / "planted.txt").write_text("inside the submodule\n")
    (work / "fifo").parent.mkdir(exist_ok=True)
    os.mkfifo(work / "fifo")


def test_the_patch_leaves_out_what_git_ignores_and_applies_byte_for_byte(repo, home, tmp_path):
    copy = copy_workspace(repo, "r1", default_policy())
    node_edits(copy.working)
    patch = changes(copy)
    for ignored in (b"build/out.txt", b".venv", b"more.o", b"planted.txt", b"fifo"):
        assert ignored not in patch
    target = tmp_path / "patch"
    target.write_bytes(patch)
    subprocess.run(["git", "-C", str(repo), "apply", str(target)], check=True)
    for name in ("src/app.py", "logo.bin", "new.bin", "tool.sh"):
        assert (repo / name).read_bytes() == (copy.working / name).read_bytes(), name
    assert not os.stat(repo / "run.sh").st_mode & stat.S_IXUSR
    assert os.stat(repo / "tool.sh").st_mode & stat.S_IXUSR
    assert os.readlink(repo / "new-link") == "run.sh"
    assert not (repo / "notes.md").exists()


def test_no_change_writes_no_patch(repo, home):
    copy = copy_workspace(repo, "r1", default_policy())
    (copy.working / "main.o").write_text("ignored\n")  # only an ignored file
    assert write_patch(copy, "r1") is None
    assert not (home / "runs" / "r1" / "artifacts").exists()


def test_a_subdirectory_workspace_patches_paths_from_the_root(repo, home, tmp_path):
    (repo / "src" / ".gitignore").write_text("")  # rules above the workspace still apply
    copy = copy_workspace(repo / "src", "r1", default_policy())
    (copy.working / "app.py").write_text("print('sub')\n")
    (copy.working / "gen.o").write_text("ignored by the root's .gitignore\n")
    patch = changes(copy)
    assert b"+++ b/src/app.py" in patch and b"gen.o" not in patch
    target = tmp_path / "p"
    target.write_bytes(patch)
    subprocess.run(["git", "-C", str(repo), "apply", str(target)], check=True)
    assert (repo / "src" / "app.py").read_text() == "print('sub')\n"


def test_outside_git_new_files_all_come_back_but_excluded_ones(tmp_path, home):
    root = tmp_path / "plain"
    root.mkdir()
    (root / "a.txt").write_text("a\n")
    (root / ".gitignore").write_text("*.o\n")
    copy = copy_workspace(root, "r1", default_policy(), ("*.log",))
    (copy.working / "b.o").write_text("kept: no repository, no ignore rules\n")
    (copy.working / "c.log").write_text("excluded\n")
    (copy.working / "a.txt").write_text("b\n")
    patch = changes(copy)
    assert b"+++ b/b.o" in patch and b"+++ b/a.txt" in patch and b"c.log" not in patch


def test_a_planted_git_config_or_attributes_never_runs_anything(repo, home, tmp_path):
    """The copy is the node's: a .gitattributes asking for a filter or a diff driver, a
    planted .git directory, must not make the host's git run a program."""
    copy = copy_workspace(repo, "r1", default_policy())
    marker = tmp_path / "ran"
    (copy.working / ".gitattributes").write_text("* filter=evil diff=evil\n")
    (copy.working / ".git").mkdir()
    (copy.working / ".git" / "config").write_text(
        f'[filter "evil"]\n\tclean = touch {marker}\n[diff "evil"]\n\ttextconv = touch {marker}\n'
    )
    (copy.working / "src" / "app.py").write_text("print('x')\n")
    patch = changes(copy)
    assert b"+++ b/src/app.py" in patch and b".git/config" not in patch
    assert not marker.exists()


def test_progress_is_silent_under_a_second_then_reports():
    clock = iter([0.0, 0.5, 1.2, 1.3, 1.9, 2.5]).__next__
    stream = io.StringIO()
    progress = Progress(10, 10 << 20, stream, clock)
    progress.update(1, 1 << 20)  # 0.5 s
    assert stream.getvalue() == ""
    progress.update(5, 5 << 20)  # 1.2 s: shown
    progress.update(6, 6 << 20)  # 1.3 s: too soon after
    progress.update(9, 9 << 20)  # 1.9 s: shown
    progress.done()  # 2.5 s
    assert stream.getvalue().splitlines() == [
        "copying the workspace: 5/10 files, 5/10 MiB",
        "copying the workspace: 9/10 files, 9/10 MiB",
        "copied the workspace: 10 files, 10 MiB in 2.5 s",
    ]


def test_an_edit_that_puts_size_and_mtime_back_is_still_in_the_patch(repo, home):
    """Unchanged files are not hashed again (their stamp is as we left it); a node that
    rewrites a file to the same size and sets its mtime back still changes its ctime."""
    copy = copy_workspace(repo, "r1", default_policy())
    path = copy.working / "src" / "app.py"
    before = os.stat(path)
    path.write_text("print('HI')\n")  # the same size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert b"+print('HI')" in changes(copy)


def test_a_subdirectory_workspace_judges_new_paths_by_the_repositorys_rules(repo, home):
    """Rules from above the workspace (the root's .gitignore, info/exclude) apply to new
    directories too, and stay anchored where they were written: info/exclude's `/docs`
    means the root's docs, not src/docs."""
    (repo / ".git" / "info").mkdir(exist_ok=True)
    (repo / ".git" / "info" / "exclude").write_text("/docs\n")
    copy = copy_workspace(repo / "src", "r1", default_policy())
    (copy.working / ".venv" / "lib").mkdir(parents=True)
    (copy.working / ".venv" / "lib" / "site.py").write_text("ignored from the root\n")
    (copy.working / "out" / "deep").mkdir(parents=True)
    (copy.working / "out" / "deep" / "x.o").write_text("ignored from the root\n")
    (copy.working / "docs").mkdir()
    (copy.working / "docs" / "guide.md").write_text("kept: /docs is the root's\n")
    patch = changes(copy)
    assert b".venv" not in patch and b"x.o" not in patch
    assert b"+++ b/src/docs/guide.md" in patch


@pytest.mark.parametrize("in_git", [True, False])
def test_the_agents_project_settings_are_never_copied_nor_come_back(tmp_path, home, in_git):
    """A workspace's .claude/settings*.json would choose the agent's model, widen its
    permissions or add hooks past the policy: not copied; one the node writes is not in
    the patch. Its slash commands (prompts) are copied."""
    root = tmp_path / "ws"
    (root / ".claude" / "commands").mkdir(parents=True)
    for name in ("settings.json", "settings.local.json"):
        (root / ".claude" / name).write_text('{"model": "workspace-chosen"}\n')
    (root / ".claude" / "commands" / "review.md").write_text("Review $ARGUMENTS\n")
    if in_git:
        git(root, "init", "-q")
        git(root, "add", "-A")
        git(root, "commit", "-qm", "init")
    copy = copy_workspace(root, "r1", default_policy())
    assert sorted(p.name for p in (copy.working / ".claude").iterdir()) == ["commands"]
    (copy.working / ".claude" / "settings.json").write_text('{"model": "node-chosen"}\n')
    (copy.working / ".claude" / "commands" / "new.md").write_text("New\n")
    patch = changes(copy).decode()
    assert "commands/new.md" in patch and "settings" not in patch


def test_the_default_store_inside_the_repository_stays_out_of_its_status(repo, monkeypatch):
    """Run from a subdirectory, the store lands there (`.sandbox-orch/`): it ignores
    itself, so `git status` does not show it and `git add -A` cannot commit it."""
    monkeypatch.delenv("SANDBOX_ORCH_HOME", raising=False)
    monkeypatch.chdir(repo / "src")
    copy_workspace(repo, "r1", default_policy())
    store = repo / "src" / ".sandbox-orch"
    assert (store / "runs" / "r1").is_dir()
    assert ".sandbox-orch" not in git(repo, "status", "--porcelain", "--untracked-files=all")
    git(repo, "add", "-A")
    assert ".sandbox-orch" not in git(repo, "diff", "--cached", "--name-only")
    # A file of that name already there (the user's own, or a link) is left as it is.
    (store / ".gitignore").unlink()
    os.symlink(repo / "notes.md", store / ".gitignore")
    copy_workspace(repo, "r2", default_policy())
    assert (repo / "notes.md").read_text() == "untracked\n"


def test_a_store_of_sandbox_orch_home_s_is_left_as_it_is(repo, home):
    copy_workspace(repo, "r1", default_policy())
    assert (home / "runs" / "r1").is_dir() and not (home / ".gitignore").exists()
