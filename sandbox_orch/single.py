"""`sandbox-orch single RUNTIME`: one node, with a copy of a workspace at /workspace; its
changes come back as the artifact `changes.patch`, never written into the workspace.

The node is an ordinary one-node workflow, planned and admitted like any other, so the
policy decides exactly as it would for a workflow. The workspace is copied twice into the
run's directory: a pristine copy, and the one mounted writable into the sandbox. The
patch is `git diff --no-index` between them, which never follows symlinks (a link the
agent planted shows as a link, not as the file it points at).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .admission import admit
from .agents.prompts import escape
from .backend import Backend
from .errors import InfrastructureError, InputRefused, Problem
from .events import Emit
from .loading import validate_document
from .mounts import BindMount
from .orchestrator import RunOptions, RunReport, run_plan
from .planning import Plan, make_plan
from .policy import Policy
from .runtimes import PRESETS
from .sandbox import Sandbox
from .store import home, run_dir, save_results
from .workflow import Workflow
from .yamlsafe import Document

NODE = "single"
WORKSPACE = "/workspace"
PATCH = "changes.patch"
SKIPPED = (".git", ".sandbox-orch")  # history and our own run store stay on the host


@dataclass(frozen=True)
class SingleRequest:
    runtime: str
    workspace: Path
    prompt: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    egress: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()


def single_plan(request: SingleRequest) -> Plan:
    """The one-node workflow `single` runs: the same validation as a file would get."""
    node: dict[str, Any] = {"runtime": request.runtime, "workdir": WORKSPACE}
    runtime = PRESETS.get(request.runtime)
    if runtime is not None and runtime.agent:
        if request.prompt is None:
            raise _refused("--prompt", f"runtime {request.runtime!r} needs --prompt TEXT")
        node["prompt"] = escape(request.prompt)  # taken as typed: `${{` is no template here
        if request.args:
            node["command"] = list(request.args)
    else:
        if request.prompt is not None:
            raise _refused("--prompt", f"runtime {request.runtime!r} takes no prompt")
        if not request.args:
            raise _refused("ARGS", "give the command after --, e.g. -- make test")
        node["command"] = list(request.args)
    if request.env:
        node["env"] = dict(request.env)
    if request.egress:
        node["network"] = {"egress": list(request.egress)}
    if request.secrets:
        node["secrets"] = list(request.secrets)
    data = {"version": 1, "name": f"single-{request.runtime}", "nodes": {NODE: node}}
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    document = Document(str(request.workspace / "(single)"), data, lines={}, sha256=digest)
    return make_plan(document, validate_document(document, Workflow))


@dataclass(frozen=True)
class WorkspaceCopy:
    pristine: Path
    working: Path


def copy_workspace(workspace: Path, run_id: str, policy: Policy) -> WorkspaceCopy:
    """Two copies in the run's directory, symlinks kept as links (never followed)."""
    size = _tree_size(workspace)
    if size > policy.limits.artifacts:
        raise _refused(
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


def write_patch(copy: WorkspaceCopy, run_id: str) -> dict[str, Any]:
    """Diff the copies into artifacts/single/changes.patch; remove the copies."""
    diff = subprocess.run(
        ["git", "diff", "--no-index", "--binary", "--no-prefix", "--", "a", "b"],
        cwd=copy.pristine.parent,
        capture_output=True,
        check=False,
    )
    if diff.returncode not in (0, 1):  # 1 means "there are differences"
        message = diff.stderr.decode(errors="replace").strip()
        raise InfrastructureError(f"cannot compute the patch: {message}")
    patch = diff.stdout
    target = run_dir(run_id) / "artifacts" / NODE / PATCH
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(patch)
    shutil.rmtree(copy.pristine.parent, ignore_errors=True)
    return {
        "name": PATCH,
        "path": str(target),
        "bytes": len(patch),
        "sha256": hashlib.sha256(patch).hexdigest(),
    }


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


def _refused(field: str, message: str) -> InputRefused:
    return InputRefused([Problem("single", None, field, message)])


async def run_single(
    request: SingleRequest,
    policy: Policy,
    backend: Backend,
    run_id: str,
    emit: Emit,
    interrupt: asyncio.Event,
    results_file: Path | None = None,
) -> RunReport:
    """Admit, copy the workspace, run the node, and return its changes as a patch."""
    plan = single_plan(request)
    sandboxes = admit(plan, policy)
    copy = copy_workspace(request.workspace, run_id, policy)
    try:
        sandboxes = {NODE: with_workspace(sandboxes[NODE], copy)}
        report = await run_plan(
            plan, policy, sandboxes, backend, run_id, emit, interrupt, RunOptions()
        )
        artifact = write_patch(copy, run_id)
    finally:
        shutil.rmtree(copy.pristine.parent, ignore_errors=True)
    report.results["nodes"][NODE]["artifacts"] = [artifact]
    save_results(run_id, report.results, results_file)
    return dataclasses.replace(report, patch=Path(artifact["path"]))
