"""`sandbox-orch single RUNTIME`: one node, with a copy of a workspace at /workspace; its
changes come back as the artifact `changes.patch`, never written into the workspace
unless asked (`--apply`, or `--branch` for a commit on a new branch).

The node is an ordinary one-node workflow (request.py), planned and admitted like any
other, so the policy decides exactly as it would for a workflow. What is copied is what
git would keep (selection.py); it is copied once into the run's directory, its baseline
kept in a scratch git index (workspace.py, scratch.py); the patch (changes.py) is the
diff from that baseline to what the node left, never following symlinks (a link the
agent planted shows as a link, not as the file it points at). delivery.py takes it back.

The copy is made in a thread while the run prepares the node's container (created and
started with the mounts admission decided, held by its gate: the copy's directory exists,
empty, from the start, and a bind mount shows what is written into it later); the run
releases it only once the copy is complete and checked (RunOptions.ready).
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from pathlib import Path

from ..admission import admit
from ..backend import Backend
from ..events import Emit, Event, RunFinished
from ..orchestrator import RunOptions, RunReport, run_plan
from ..policy import Policy
from ..status import RunStatus
from ..store import save_results
from ..terminal import HostTerminal
from . import session
from .changes import PATCH, write_patch
from .delivery import Delivery, check_delivery, deliver
from .request import NODE, WORKSPACE, SingleRequest, check_session, single_plan
from .workspace import (
    WorkspaceCopy,
    begin_copy,
    copy_workspace,
    discard_copy,
    finish_copy,
    with_workspace,
)

__all__ = [
    "NODE",
    "PATCH",
    "WORKSPACE",
    "Delivery",
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
    plan = single_plan(request, policy.agents)
    kept = None
    if request.continue_from is not None:
        kept = session.kept_session(request.continue_from, request.runtime)
        plan = session.resumed(plan, request.runtime)
    admitting = check_session(request, policy)
    terminal = HostTerminal(interrupt) if request.interactive else None
    if terminal is not None:
        emit = terminal.holding(emit)
    sandboxes = admit(plan, admitting)
    delivery = Delivery(request.apply, request.branch)
    check_delivery(request.workspace, delivery)
    pending = begin_copy(request.workspace, run_id, policy, request.excludes)
    finished: list[Event] = []  # run_finished, held until the patch is written
    stop = threading.Event()
    copying: asyncio.Future[WorkspaceCopy] | None = None
    try:
        state = session.prepare_state(request.runtime, run_id, policy, kept)
        sandbox = with_workspace(sandboxes[NODE], pending)  # the same mount once filled
        sandbox = session.with_state(sandbox, request.runtime, state)
        # The copy is made in a thread while the run prepares: preflight, the evaluation
        # worker, the node's container created and started, held by its gate. The run
        # releases it only once the copy is complete and checked (RunOptions.ready).
        copying = asyncio.ensure_future(asyncio.to_thread(finish_copy, pending, stop))
        report = await run_plan(
            plan, policy, {NODE: sandbox}, backend, run_id, _holding(emit, finished),
            interrupt, RunOptions(terminal=terminal, ready=copying),
        )  # fmt: skip
        copy = copying.result()
        session.keep_state(state, request.runtime, run_id, policy.limits.artifacts)
        artifact = write_patch(copy, run_id)
    finally:
        if copying is not None:  # stopped if the run failed before it started
            stop.set()
            await asyncio.shield(asyncio.gather(copying, return_exceptions=True))
        discard_copy(pending)
    report.results["nodes"][NODE]["artifacts"] = [artifact] if artifact else []
    if terminal is not None:  # its output was the user's screen: no answer, no usage parsed
        report.results["nodes"][NODE]["interactive"] = True
    save_results(run_id, report.results, results_file)
    patch = Path(artifact["path"]) if artifact else None
    delivered = _deliver(copy, patch, delivery, report, request)
    for event in finished:
        emit(event)
    return dataclasses.replace(report, patch=patch, delivered=delivered)


def _deliver(
    copy: WorkspaceCopy, patch: Path | None, delivery: Delivery, report: RunReport,
    request: SingleRequest,
) -> str | None:  # fmt: skip
    """--apply / --branch, once the patch is safely written; only after a run that
    succeeded (a failed or interrupted node's half-done work is only kept)."""
    if patch is None or delivery == Delivery():
        return None
    if report.status != RunStatus.SUCCEEDED:
        what = "applied" if delivery.apply else "committed"
        return f"not {what}: the run {report.status}; patch kept"
    message = f"sandbox-orch single {request.runtime} (run {report.run_id})"
    return deliver(copy, patch, delivery, message)


def _holding(emit: Emit, held: list[Event]) -> Emit:
    """The patch is written before the run's last word is printed: a reader that goes
    away then (`| head`), or a Ctrl-C, cannot come between the run and its patch."""

    def hold(event: Event) -> None:
        if isinstance(event, RunFinished):
            held.append(event)
        else:
            emit(event)

    return hold
