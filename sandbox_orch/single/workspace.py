"""The workspace copy a `single` node works on: copied into the run's directory, twice (a
pristine copy and the one mounted writable into the sandbox), symlinks kept as links."""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..mounts import BindMount
from ..policy import Policy
from ..sandbox import Sandbox
from ..store import home, run_dir
from .request import WORKSPACE, refused

SKIPPED = (".git", ".sandbox-orch")  # history and our own run store stay on the host


@dataclass(frozen=True)
class WorkspaceCopy:
    pristine: Path
    working: Path


def copy_workspace(workspace: Path, run_id: str, policy: Policy) -> WorkspaceCopy:
    """Two copies in the run's directory, symlinks kept as links (never followed)."""
    size = _tree_size(workspace)
    if size > policy.limits.artifacts:
        raise refused(
            "--workspace", f"{workspace} holds {size} bytes, above the policy's artifacts limit"
        )
    base = run_dir(run_id) / "single"
    pristine, working = base / "a", base / "b"
    shutil.copytree(workspace, pristine, symlinks=True, ignore=_skipped)
    shutil.copytree(workspace, working, symlinks=True, ignore=_skipped)
    _hand_to_sandbox_user(working, policy.user)
    return WorkspaceCopy(pristine, working)


def _skipped(directory: str, names: list[str]) -> set[str]:
    """SKIPPED by name, and the run store wherever $SANDBOX_ORCH_HOME puts it: nothing
    this tool writes is copied into a node's workspace."""
    store = os.path.realpath(home())
    skipped = {name for name in names if name in SKIPPED}
    skipped.update(n for n in names if os.path.realpath(os.path.join(directory, n)) == store)
    return skipped


def with_workspace(sandbox: Sandbox, copy: WorkspaceCopy) -> Sandbox:
    mount = BindMount(str(copy.working), WORKSPACE, read_only=False)
    return dataclasses.replace(sandbox, mounts=(*sandbox.mounts, mount))


def _tree_size(root: Path) -> int:
    total = 0
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIPPED]
        for name in files:
            path = Path(directory) / name
            if not path.is_symlink():
                total += path.stat().st_size
    return total


def _hand_to_sandbox_user(root: Path, user: str) -> None:
    """The node runs as the policy's user: let it write its copy (and only its copy)."""
    uid, gid = (int(part) for part in user.split(":"))
    for directory, _, files in os.walk(root):
        for path in [Path(directory), *(Path(directory) / f for f in files)]:
            if os.geteuid() == 0:
                os.lchown(path, uid, gid)
            elif not path.is_symlink():
                path.chmod(path.stat().st_mode | 0o666 | (0o111 if path.is_dir() else 0))
