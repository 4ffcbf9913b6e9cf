"""What the host's git would run, read from git's own files (gitpaths): config sections
and values as git reads them, include chains, `.git` files, the user's configuration.
Pure: no engine, no git. See test_git_protection.py for how admission uses it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from sandbox_orch import gitpaths
from sandbox_orch.gitpaths import MAX_INCLUDE_DEPTH, inside_git, is_git_dir, named_in_config
from sandbox_orch.mounts import walk

from .test_git_protection import git_dir

REG, DIR = stat.S_IFREG, stat.S_IFDIR


def _files(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")


@pytest.mark.parametrize(
    "header",
    ['[includeIf "gitdir:/x/"]', '[includeIf\t"gitdir:/x/"]', "[INCLUDE]", "[include.sub]",
     "[include.a.b]", "[include] ; comment ]"],
)  # fmt: skip
def test_an_include_section_is_read_in_every_spelling_git_accepts(tmp_path, header):
    """A subsection after white space or a dot is still the section: a tab or a dotted
    name must not hide an include from the walk."""
    git_dir(tmp_path / ".git", f"{header}\n\tpath = ../inc\n")
    _files(tmp_path, "inc")
    assert walk(tmp_path).git == (".git", "inc")


@pytest.mark.parametrize("header", ["[core.sub]", "[core.a.b]", '[core "x"]', "[Core]"])
def test_a_hooks_path_is_read_under_any_spelling_of_core(tmp_path, header):
    git_dir(tmp_path / ".git", f"{header}\n\thooksPath = h\n")
    (tmp_path / "h").mkdir()
    assert walk(tmp_path).git == (".git", "h")


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ("path = a=b.inc", "a=b.inc"),  # the value is everything after the first =
        ('path = "my includes/x.inc"', "my includes/x.inc"),  # quoted, with a space
        ("path = x.inc # one # two", "x.inc"),
        ("path = x.inc ; one ; two", "x.inc"),
        ("path = x.inc ; one # two", "x.inc"),
        ("path = Xx.incX", "Xx.incX"),
        ("path = x.inc#c", "x.inc"),  # git needs no space before a comment
        ("path = x.inc;c", "x.inc"),
        ('path = "a#b;c.inc" # c', "a#b;c.inc"),  # inside quotes: not a comment
        ('path = "x  "y.inc', "x  y.inc"),  # quoted white space is kept as written
        ("path = x\ty \t z.inc \t ", "x y   z.inc"),  # outside: one space each, ends dropped
        (r"path = \"a\\b\".inc", r'"a\b".inc'),  # a backslash takes the next character
        ("path = x.inc\\", "x.inc"),  # a line continued onto nothing
    ],
)
def test_include_values_as_git_reads_them(tmp_path, line, named):
    config = tmp_path / "config"
    config.write_text(f"[include]\n\t{line}\n")
    assert named_in_config(config, tmp_path) == [tmp_path / named]


def test_only_the_keys_that_name_code_are_kept(tmp_path):
    """core.hooksPath and include paths: not every core key, not every `path`
    (a submodule's path is a work tree directory, written by nodes on purpose)."""
    config = tmp_path / "config"
    config.write_text(
        '[core]\n\texcludesFile = notes\n\tbare = false\n[submodule "lib"]\n\tpath = vendor\n'
        "path = before-any-section\n"
    )
    assert named_in_config(config, tmp_path) == []


def test_a_config_that_is_not_utf_8_is_still_read(tmp_path):
    config = tmp_path / "config"
    config.write_bytes(b"# \xff\xfe latin-1 comment \xe9\n[core]\n\thooksPath = h\n")
    assert named_in_config(config, tmp_path) == [tmp_path / "h"]


def _include_chain(root: Path, length: int) -> None:
    """config includes inc1, inc1 includes inc2, ... each with a relative hooksPath."""
    (root / "config").write_text("[include]\n\tpath = inc1\n")
    for i in range(1, length + 1):
        (root / f"inc{i}").write_text(
            f"[include]\n\tpath = inc{i + 1}\n[core]\n\thooksPath = h{i}\n"
        )


def test_includes_are_followed_to_a_fixed_depth(tmp_path):
    _include_chain(tmp_path, MAX_INCLUDE_DEPTH + 3)
    found = named_in_config(tmp_path / "config", tmp_path / "wt")
    depth = MAX_INCLUDE_DEPTH
    # Each included file is read up to the limit, and what it includes is named.
    expected = [tmp_path / "inc1"]
    for i in range(1, depth + 1):
        expected += [tmp_path / f"inc{i + 1}", tmp_path / "wt" / f"h{i}"]
    assert sorted(found) == sorted(expected)


def test_an_include_cycle_ends(tmp_path):
    (tmp_path / "config").write_text("[include]\n\tpath = config\n")
    found = named_in_config(tmp_path / "config", tmp_path)
    assert found == [tmp_path / "config"] * (MAX_INCLUDE_DEPTH + 1)


def test_a_relative_hooks_path_in_an_included_file_is_relative_to_the_work_tree(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text("[include]\n\tpath = ../shared.inc\n")
    (tmp_path / "shared.inc").write_text("[core]\n\thooksPath = tools/hooks\n")
    (tmp_path / "tools" / "hooks").mkdir(parents=True)
    assert walk(tmp_path).git == (".git", "shared.inc", "tools/hooks")


def test_a_relative_hooks_path_is_relative_to_the_work_tree_not_the_git_directory(tmp_path):
    git_dir(tmp_path / "repo" / ".git", "[core]\n\thooksPath = ../shared-hooks\n")
    (tmp_path / "repo" / "shared-hooks").mkdir()  # where it would be from .git: not it
    (tmp_path / "shared-hooks").mkdir()
    assert walk(tmp_path).git == ("repo/.git", "shared-hooks")


def test_a_bare_repository_s_relative_hooks_path_is_relative_to_it(tmp_path):
    git_dir(tmp_path / "remotes" / "origin.git", "[core]\n\thooksPath = ../hooks-o\n")
    (tmp_path / "remotes" / "hooks-o").mkdir()
    assert walk(tmp_path).git == ("remotes/hooks-o", "remotes/origin.git")


def test_a_dot_git_file_naming_a_worktree_s_git_directory(tmp_path):
    """A `git worktree` git directory has no objects/ nor refs/ of its own: found only
    because the `.git` file names it; its config's relative hooksPath is relative to the
    work tree holding the `.git` file."""
    (tmp_path / "gd").mkdir()
    (tmp_path / "gd" / "HEAD").write_text("ref: refs/heads/x\n")
    (tmp_path / "gd" / "config").write_text("[core]\n\thooksPath = h\n")
    (tmp_path / "wt" / "h").mkdir(parents=True)
    (tmp_path / "wt" / ".git").write_text("gitdir: ../gd\n")
    assert walk(tmp_path).git == ("gd", "wt/.git", "wt/h")


@pytest.mark.parametrize("text", ["gitdir:\n", "gitdir:   \n", "sub\n", "GITDIR: sub\n", ""])
def test_a_dot_git_file_naming_nothing_is_kept_alone(tmp_path, text):
    (tmp_path / "wt" / "sub").mkdir(parents=True)
    (tmp_path / "wt" / ".git").write_text(text)
    assert walk(tmp_path).git == ("wt/.git",)


def test_a_git_directory_outside_the_source_is_not_named(tmp_path):
    """Existing, but beyond the mount: nothing to keep read-only in it."""
    source = tmp_path / "src"
    (source / "wt").mkdir(parents=True)
    git_dir(tmp_path / "elsewhere")
    (source / "wt" / ".git").write_text(f"gitdir: {tmp_path / 'elsewhere'}\n")
    assert walk(source).git == ("wt/.git",)


def test_the_user_s_xdg_git_config_is_read(tmp_path, monkeypatch):
    source = tmp_path / "src"
    (source / "hooks").mkdir(parents=True)
    (tmp_path / "xdg" / "git").mkdir(parents=True)
    (tmp_path / "xdg" / "git" / "config").write_text(f"[core]\n\thooksPath = {source}/hooks\n")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert walk(source).git == ("hooks",)


def test_without_xdg_the_git_config_under_the_home_s_config_is_read(tmp_path, monkeypatch):
    source = tmp_path / "src"
    (source / "hooks").mkdir(parents=True)
    (tmp_path / "home" / ".config" / "git").mkdir(parents=True)
    config = tmp_path / "home" / ".config" / "git" / "config"
    config.write_text(f"[core]\n\thooksPath = {source}/hooks\n")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    assert walk(source).git == ("hooks",)
    # Named outside the source (it exists): nothing to keep read-only in this mount.
    config.write_text(f"[core]\n\thooksPath = {tmp_path}/home\n")
    assert walk(source).git == ()


@pytest.mark.parametrize(
    "kinds",
    [{"HEAD": REG, "objects": DIR}, {"HEAD": REG, "refs": DIR}, {"objects": DIR, "refs": DIR},
     {"HEAD": DIR, "objects": DIR, "refs": DIR}, {"HEAD": REG, "objects": REG, "refs": DIR},
     {"HEAD": REG, "objects": DIR, "refs": REG}],
)  # fmt: skip
def test_a_git_directory_needs_all_three_of_head_objects_and_refs(kinds):
    assert not is_git_dir(kinds)
    assert is_git_dir({"HEAD": REG, "objects": DIR, "refs": DIR})


def test_a_dot_git_directory_is_a_git_directory_even_empty(tmp_path):
    (tmp_path / ".git" / "hooks").mkdir(parents=True)
    assert inside_git(tmp_path / ".git" / "hooks") == tmp_path / ".git"
    assert inside_git(tmp_path / "git") is None
    assert gitpaths.of_dot_git(tmp_path / ".git", tmp_path) == [tmp_path / ".git"]
