"""`sandbox-orch single RUNTIME`: one node, with a copy of a workspace at /workspace; its
changes come back as the artifact `changes.patch`, never written into the workspace.

The node is an ordinary one-node workflow (request.py), planned and admitted like any
other, so the policy decides exactly as it would for a workflow. The workspace is copied
into the run's directory (workspace.py); the patch (changes.py) is `git diff --no-index`
between the pristine copy and the one the node worked on, which never follows symlinks (a
link the agent planted shows as a link, not as the file it points at).
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from pathlib import Path

from ..admission import admit
from ..backend import Backend
from ..events import Emit
from ..orchestrator import RunOptions, RunReport, run_plan
from ..policy import Policy
from ..store import save_results
from ..terminal import HostTerminal
from .changes import PATCH, write_patch
from .request import NODE, WORKSPACE, SingleRequest, check_session, single_plan
from .workspace import WorkspaceCopy, copy_workspace, with_workspace

__all__ = [
    "NODE",
    "PATCH",
    "WORKSPACE",
    "SingleRequest",
    "WorkspaceCopy",
    "copy_workspace",
    "run_single",
    "single_plan",
    "with_workspace",
    "write_patch",
]


async def run_single(
    request: SingleRequest,
    policy: Policy,
    backend: Backend,
    run_id: str,
    emit: Emit,
    interrupt: asyncio.Event,
    results_file: Path | None = None,
) -> RunReport:
    """Admit, copy the workspace, run the node, and return its changes as a patch.
    An interactive request runs attached to this process's terminal (stdin, stdout)."""
    plan = single_plan(request)
    check_session(request, policy)
    terminal = HostTerminal(interrupt) if request.interactive else None
    if terminal is not None:
        emit = terminal.holding(emit)
    sandboxes = admit(plan, policy)
    copy = copy_workspace(request.workspace, run_id, policy)
    try:
        sandboxes = {NODE: with_workspace(sandboxes[NODE], copy)}
        report = await run_plan(
            plan, policy, sandboxes, backend, run_id, emit, interrupt, RunOptions(terminal=terminal)
        )
        artifact = write_patch(copy, run_id)
    finally:
        shutil.rmtree(copy.pristine.parent, ignore_errors=True)
    report.results["nodes"][NODE]["artifacts"] = [artifact]
    if terminal is not None:  # its output was the user's screen: no answer, no usage parsed
        report.results["nodes"][NODE]["interactive"] = True
    save_results(run_id, report.results, results_file)
    return dataclasses.replace(report, patch=Path(artifact["path"]))
