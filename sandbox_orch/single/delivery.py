"""Getting the changes back into the user's tree: the command that applies the patch from
wherever the user stands, `--apply` (into the workspace, only when it applies cleanly and
the workspace is as it was copied) and `--branch NAME` (a commit on a new branch, made in
a temporary index: the working tree, the index and the current branch are not touched).

Checks that can fail before the run (`check_delivery`) are made before anything starts.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .gitcommand import run_git
from .request import refused
from .selection import GitRepo, find_repo, select
from .workspace import WorkspaceCopy, store_inside


@dataclass(frozen=True)
class Delivery:
    """What to do with the patch after the run (at most one of the two)."""

    apply: bool = False
    branch: str | None = None


def default_workspace(cwd: Path) -> Path:
    """The repository's root when run inside one (from a subdirectory too), else `cwd`."""
    repo = find_repo(cwd)
    return repo.top if repo is not None else cwd


def apply_root(workspace: Path, repo: GitRepo | None) -> Path:
    """Where the patch's paths start: the repository's root, else the workspace."""
    return repo.top if repo is not None else workspace


def apply_command(root: Path, patch: Path) -> str:
    """The command that applies the patch from any directory (absolute paths)."""
    return f"git -C {shlex.quote(str(root))} apply {shlex.quote(str(patch))}"


def check_delivery(workspace: Path, delivery: Delivery) -> None:
    """Refuse (exit 2) what cannot work, before anything starts."""
    if delivery.apply and delivery.branch is not None:
        raise refused("--branch", "choose --apply or --branch, not both")
    if delivery.branch is None:
        return
    repo = find_repo(workspace)
    if repo is None:
        raise refused("--branch", f"{workspace} is not in a git repository")
    name = delivery.branch
    valid = _git(repo.top, ["check-ref-format", "--branch", name])
    if valid.returncode != 0 or name.startswith("-"):
        raise refused("--branch", f"{name!r} is not a valid branch name")
    if _git(repo.top, ["show-ref", "--verify", "--quiet", f"refs/heads/{name}"]).returncode == 0:
        raise refused("--branch", f"branch {name!r} already exists")


def deliver(copy: WorkspaceCopy, patch: Path, delivery: Delivery, message: str) -> str | None:
    """Apply or commit the patch as asked; one line saying what happened (None: nothing
    was asked)."""
    if delivery.apply:
        return apply_to_workspace(copy, patch)
    if delivery.branch is not None:
        return commit_on_branch(copy, patch, delivery.branch, message)
    return None


def apply_to_workspace(copy: WorkspaceCopy, patch: Path) -> str:
    changed = changed_since_copy(copy)
    if changed is not None:
        return f"not applied: the workspace changed since it was copied ({changed}); patch kept"
    root = apply_root(copy.workspace, copy.repo)
    check = _git(root, ["apply", "--check", str(patch)])
    if check.returncode != 0:
        return f"not applied: it does not apply cleanly ({_first_line(check)}); patch kept"
    done = _git(root, ["apply", str(patch)])
    if done.returncode != 0:
        return f"not applied: git apply failed ({_first_line(done)}); patch kept"
    return f"applied to {root}"


def changed_since_copy(copy: WorkspaceCopy) -> str | None:
    """The first path added, removed or modified (by lstat) since the copy, or None."""
    now = select(copy.workspace, copy.repo, copy.excludes, store_inside(copy.workspace))
    before = {e.path: e for e in copy.entries}
    after = {e.path: e for e in now}
    for path in sorted(before.keys() | after.keys()):
        if before.get(path) != after.get(path):
            return os.fsdecode(path)
    return None


def commit_on_branch(copy: WorkspaceCopy, patch: Path, branch: str, message: str) -> str:
    """read-tree HEAD, apply --cached, write-tree, commit-tree, update-ref: in a temporary
    index, so the user's working tree, index and current branch stay as they are."""
    repo = copy.repo
    assert repo is not None  # check_delivery refused --branch outside git
    with tempfile.TemporaryDirectory(prefix="sandbox-orch-branch-") as scratch:
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(scratch) / "index")}
        base = ["read-tree", repo.head] if repo.head else ["read-tree", "--empty"]
        steps = [base, ["apply", "--cached", str(patch)]]
        for step in steps:
            done = _git(repo.top, step, env)
            if done.returncode != 0:
                why = _first_line(done)
                return f"no branch: the patch does not apply on HEAD ({why}); patch kept"
        tree = _git(repo.top, ["write-tree"], env)
    if tree.returncode != 0:
        return f"no branch: git could not write the tree ({_first_line(tree)}); patch kept"
    parents = ["-p", repo.head] if repo.head else []
    commit = _git(repo.top, ["commit-tree", tree.stdout.decode().strip(), *parents, "-m", message],
                  _with_identity(repo.top))  # fmt: skip
    if commit.returncode != 0:
        return f"no branch: git could not commit ({_first_line(commit)}); patch kept"
    oid = commit.stdout.decode().strip()
    zero = "0" * len(oid)  # the branch must not exist: update-ref refuses otherwise
    made = _git(repo.top, ["update-ref", f"refs/heads/{branch}", oid, zero])
    if made.returncode != 0:
        return f"no branch: {_first_line(made)}; patch kept"
    return f"committed on branch {branch} ({oid[:12]})"


def _with_identity(top: Path) -> dict[str, str]:
    """The user's identity if git knows one, else sandbox-orch's (a commit needs one)."""
    env = dict(os.environ)
    if _git(top, ["var", "GIT_COMMITTER_IDENT"]).returncode != 0:
        for role in ("AUTHOR", "COMMITTER"):
            env.setdefault(f"GIT_{role}_NAME", "sandbox-orch")
            env.setdefault(f"GIT_{role}_EMAIL", "sandbox-orch@localhost")
    return env


def _git(
    cwd: Path, args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return run_git(args, cwd, env)


def _first_line(done: subprocess.CompletedProcess[bytes]) -> str:
    lines = done.stderr.decode(errors="replace").strip().splitlines()
    return lines[0] if lines else f"exit {done.returncode}"
