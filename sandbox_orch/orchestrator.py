"""A whole run: preflight, schedule, always clean up, then results. The imperative shell
around the pure plan and admission, and the scheduler."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from .agents.budgets import Budget, Crossing, with_ceiling
from .agents.spending import Spending
from .artifacts import HOLDER_IMAGE, ArtifactVolumes
from .backend import Backend, BackendError, ImageMissing
from .bounded.evaluator import Evaluator
from .egress import Unreachable
from .errors import InfrastructureError
from .events import (
    BudgetWarning,
    EgressUnreachable,
    Emit,
    Event,
    NodeFinished,
    NodeUsage,
    RunFinished,
    RunStarted,
    RunWaiting,
    event_json,
)
from .execution import OWNER_LABEL, RUN_LABEL, NodeRunner
from .planning import Plan, PlannedNode
from .policy import Policy
from .preparing import Prepared, prepare  # noqa: F401 (moved there; callers' import)
from .results import RunFacts, build_results
from .runstore import RunStore, RunStoreError
from .sandbox import Sandbox
from .scheduler import DEFAULT_MAX_PARALLEL, Scheduler, is_agent
from .secrets import Redactor, SecretStore
from .status import RunStatus
from .store import run_dir, save_results
from .terminal import HostTerminal
from .timing.countdown import StartCancelled, format_left, wait_until
from .timing.ready import roots_to_prepare, wait_ready

if TYPE_CHECKING:
    from .egress.core import RunEgress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    max_parallel: int = DEFAULT_MAX_PARALLEL
    keep_going: bool = False
    results_file: Path | None = None
    budget: Budget | None = None  # --budget-usd/--budget-tokens: over the workflow's own
    start_at: datetime | None = None  # `--start-at`: wait until then, before creating anything
    countdown_every: float | None = None  # a countdown event at once, then this often
    stagger: float = 0.0  # `--stagger`: consecutive agent starts at least this far apart
    terminal: HostTerminal | None = None  # `single` with no prompt: its session's terminal
    # `--ahead`: how many nodes' containers may be prepared (held) before they are due;
    # None: as many as --max-parallel, 0: none (timing/ahead.py).
    ahead: int | None = None
    # `single`: what the run waits for before any node starts (its workspace copy, made
    # meanwhile); the first nodes' containers are prepared (held) during the wait. Until
    # it is done nothing is recorded (no run_started, no run store row); if it fails, or
    # the run is interrupted meanwhile (StartCancelled), their containers are removed unrun.
    ready: Awaitable[object] | None = None

    @property
    def hold(self) -> int:
        """How many containers may be held at once (`ahead`, else `max_parallel`)."""
        return self.max_parallel if self.ahead is None else self.ahead


@dataclass(frozen=True)
class RunReport:
    run_id: str
    status: RunStatus
    results: dict[str, Any]
    results_path: Path
    cleanup_failures: list[str]
    patch: Path | None = None  # `single`: the node's changes to its workspace
    delivered: str | None = None  # `single --apply/--branch`: what became of the patch


def owner_token() -> str:
    """Who owns a run's resources: host, pid and the process's start time (pids recycle)."""
    started = int(psutil.Process().create_time())
    return f"{socket.gethostname()}:{os.getpid()}:{started}"


# gVisor must apply the engine's seccomp profile (CONTRACT 1: seccomp is never off).
REQUIRED_RUNTIME_ARGS = {"runsc": ("--oci-seccomp",)}


def runtime_problem(name: str, runtimes: dict[str, list[str]]) -> str | None:
    """Why the engine's `name` runtime cannot be used, or None. Never a fallback."""
    if name not in runtimes:
        return (
            f"asks for the OCI runtime {name!r}, which the engine does not offer (it has: "
            f"{', '.join(sorted(runtimes))}); sandbox-orch never falls back to a weaker runtime"
        )
    missing = [a for a in REQUIRED_RUNTIME_ARGS.get(name, ()) if a not in runtimes[name]]
    if missing:
        return (
            f"the engine's {name} runtime lacks {' '.join(missing)}, so its seccomp profile "
            "would not apply; register it as scripts/engine-up does and reload the engine"
        )
    return None


async def preflight(
    backend: Backend, policy: Policy, sandboxes: dict[str, Sandbox], artifacts: bool = False
) -> dict[str, str]:
    """Everything the run needs from the engine exists, before anything is created.
    Returns each image's id: every container of the run is created from it."""
    try:
        # runc is the engine's own default runtime; asking the engine (`info` makes it run
        # `runc --version`, ~7 ms) is only worth it for the stronger ones.
        if policy.oci_runtime != "runc":
            problem = runtime_problem(policy.oci_runtime, await backend.oci_runtimes())
            if problem:
                raise InfrastructureError(f"the policy {policy.name!r}: {problem}")
        image_ids = {}
        images = {s.image for s in sandboxes.values()}
        if artifacts and await backend.volume_store() != "host":
            images.add(HOLDER_IMAGE)  # only "host" volumes need no holder
        for image in sorted(images):
            try:
                image_ids[image] = await backend.image_id(image)
            except ImageMissing as error:
                from .images import build_hint  # only now: it loads the image builder

                raise InfrastructureError(f"{error}: {build_hint(image)}") from None
    except BackendError as error:
        raise InfrastructureError(f"engine error: {error}") from None
    return image_ids


async def run_plan(
    plan: Plan,
    policy: Policy,
    sandboxes: dict[str, Sandbox],
    backend: Backend,
    run_id: str,
    emit: Emit,
    interrupt: asyncio.Event,
    options: RunOptions = RunOptions(),
) -> RunReport:
    with_artifacts = any(node.artifacts for node in plan.nodes.values())
    image_ids = await preflight(backend, policy, sandboxes, artifacts=with_artifacts)
    if options.start_at is not None:
        await _wait_to_start(options.start_at, options.countdown_every, run_id, emit, interrupt)
        # Images may have been rebuilt during the wait: run what is there now.
        image_ids = await preflight(backend, policy, sandboxes, artifacts=with_artifacts)
    run = _RunResources.open(plan, policy, sandboxes, backend, run_id, with_artifacts, image_ids)
    emit = run.releasing(_redacting(run.keeping_events(emit), run.redactor))
    if run.egress is not None:
        run.egress.on_unreachable = _unreachable(emit)
    budget = run_budget(plan, policy, options)
    spending = _spending(plan, budget, emit)
    run.runner.spending = spending
    run.runner.terminal = options.terminal
    scheduler = Scheduler(
        plan,
        sandboxes,
        run.runner.attempt,
        emit,
        max_parallel=options.max_parallel,
        fail_fast=False if options.keep_going else None,
        evaluator=run.evaluator,
        spending=spending,
        stagger=options.stagger,
        ahead=run.runner,
        hold=options.hold,
    )
    if _needs_evaluation(plan):  # start it beside the first containers, not after them
        run.evaluator.warm(conditions=any(_costly(node) for node in plan.nodes.values()))
    if options.ready is not None:
        await _when_ready(options.ready, run, plan, sandboxes, options, interrupt)
    started_at = datetime.now(UTC)
    run.store = _open_store(run_id, plan, policy, started_at)
    shown = budget.model_dump(exclude_none=True) if budget else None
    emit(RunStarted(run_id, plan.workflow.name, list(plan.nodes), started_at, shown))
    try:
        records = await scheduler.run(interrupt)
    finally:
        # Shielded: a second Ctrl-C must not leave the run's containers behind.
        failures = await asyncio.shield(run.close_sandboxes())
    status = scheduler.run_status()
    if failures and status == RunStatus.SUCCEEDED:
        status = RunStatus.ERRORED
    facts = RunFacts(run_id, status, started_at, datetime.now(UTC), image_ids)
    results = build_results(facts, plan, policy, sandboxes, records, run.violations())
    results = run.redactor.document(results)
    if failures:
        results["cleanup_failures"] = failures
    path = save_results(run_id, results, options.results_file)
    totals = {k: v for k, v in results["totals"].items() if isinstance(v, int)}
    usage = results["totals"]["usage"]
    emit(RunFinished(run_id, status.value, facts.finished_at, results["duration_s"], totals,
                     str(path), usage))  # fmt: skip
    run.record(results)  # after run_finished, so the store has every event
    return RunReport(run_id, status, results, path, failures)


async def _when_ready(
    ready: Awaitable[object],
    run: _RunResources,
    plan: Plan,
    sandboxes: dict[str, Sandbox],
    options: RunOptions,
    interrupt: asyncio.Event,
) -> None:
    """Wait for `ready` with the first nodes' containers prepared meanwhile (held until
    their attempt releases them, which the scheduler starts only after this); on its
    failure or an interrupt, everything the run holds is removed (unrun) and it raises."""
    for name in roots_to_prepare(plan, options.hold):
        run.runner.prepare(plan.nodes[name], sandboxes[name])
    try:
        await wait_ready(ready, interrupt)
    except BaseException:
        await asyncio.shield(run.close_sandboxes())
        raise


def run_budget(plan: Plan, policy: Policy, options: RunOptions) -> Budget | None:
    """The workflow's budget, with what the command line sets in its place, under the
    policy's ceilings (the command line's were checked against them: cli.run)."""
    own = plan.workflow.budget.limits() if plan.workflow.budget else {}
    given = options.budget.limits() if options.budget else {}
    merged = {**own, **given}
    return with_ceiling(Budget(**merged) if merged else None, policy.agents.budget)


def _spending(plan: Plan, budget: Budget | None, emit: Emit) -> Spending:
    """The run's spending, reporting live usage and warnings as events."""
    agents = {n.name: n.request.budget for n in plan.nodes.values() if is_agent(n)}

    def report(node: str, attempt: int, usage: dict[str, Any], activity: str | None) -> None:
        now = datetime.now(UTC)
        emit(NodeUsage(node, attempt, usage, activity, now, spending.run_usage()))

    def warn(crossing: Crossing) -> None:
        emit(BudgetWarning(crossing.scope, crossing.metric, crossing.spent, crossing.limit,
                           crossing.reason, datetime.now(UTC)))  # fmt: skip

    later = asyncio.get_running_loop().call_later
    spending = Spending(budget, agents, report, warn, later=later)
    return spending


async def _wait_to_start(
    start_at: datetime, every: float | None, run_id: str, emit: Emit, interrupt: asyncio.Event
) -> None:
    """`--start-at`: after admission and preflight (a refusal comes at once, not after
    the wait), before any container, network, volume, proxy or run-store row exists, so
    an interrupt here leaves nothing behind (exit 130)."""

    def tick(left: float) -> None:
        emit(RunWaiting(run_id, start_at, round(left, 3), datetime.now(UTC)))

    if not await wait_until(start_at, interrupt, tick, every):
        left = (start_at - datetime.now(UTC)).total_seconds()
        raise StartCancelled(
            f"interrupted {format_left(max(left, 0))} before the start; nothing was started"
        )


def _needs_evaluation(plan: Plan) -> bool:
    """Whether a node parses its output, or has a prompt or a condition not judged inline."""
    return any(node.parse.format != "none" or _costly(node) for node in plan.nodes.values())


def _costly(node: PlannedNode) -> bool:
    """Evaluated with CEL in the worker: a condition not judged inline, or a prompt."""
    return node.prompt is not None or (node.condition is not None and not node.condition.inline)


@dataclass
class _RunResources:
    """What a run holds besides its scheduler: the node runner (and its ledger), the
    egress proxy, the secrets and their redactor, the run store, the evaluation worker.
    Opened together, closed together."""

    runner: NodeRunner
    redactor: Redactor
    egress: RunEgress | None
    evaluator: Evaluator
    run_id: str = ""
    store: RunStore | None = None  # opened once the run starts (see RunOptions.ready)
    events: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def open(
        cls,
        plan: Plan,
        policy: Policy,
        sandboxes: dict[str, Sandbox],
        backend: Backend,
        run_id: str,
        with_artifacts: bool,
        image_ids: dict[str, str],
    ) -> _RunResources:
        redactor = Redactor()
        owner = owner_token()
        artifacts = None
        if with_artifacts:
            labels = {RUN_LABEL: run_id, OWNER_LABEL: owner}
            artifacts = ArtifactVolumes(
                backend, labels, run_dir(run_id) / "artifacts", plan.nodes,
                policy.limits.artifacts_total,
            )  # fmt: skip
        egress = (
            backend.egress_proxy(run_id, owner, policy.private_names, policy.oci_runtime)
            if any(s.egress or s.brokered or s.setup_argv for s in sandboxes.values())
            else None
        )
        secrets = SecretStore(policy.secrets, redactor)
        # Its memory limit grows with the largest output a node may print.
        evaluator = Evaluator(max((s.output_limit for s in sandboxes.values()), default=0))
        runner = NodeRunner(
            backend, run_id, owner, egress, secrets, artifacts, image_ids, evaluator=evaluator
        )
        return cls(runner, redactor, egress, evaluator, run_id)

    def keeping_events(self, emit: Emit) -> Emit:
        """Events (already redacted) are kept for the run store, written with the
        results in one transaction: no database write on the scheduler's path."""

        def keep(event: Event) -> None:
            if not isinstance(event, NodeUsage):  # many a minute: views only
                self.events.append(event_json(event))
            emit(event)

        return keep

    def releasing(self, emit: Emit) -> Emit:
        """Artifact volumes are released as soon as the nodes that need them finish."""
        artifacts = self.runner.artifacts
        if artifacts is None:
            return emit

        def release(event: Event) -> None:
            emit(event)
            if isinstance(event, NodeFinished):
                artifacts.node_finished(event.node, event.retrying)

        return release

    async def close_sandboxes(self) -> list[str]:
        """Remove everything the run created on the engine; stop the egress proxy and
        the evaluation worker."""
        failures: list[str] = []
        try:
            failures = await self.runner.close()
        finally:
            await self.evaluator.close()
            if self.egress is not None:
                failures += await self.egress.close()
        return failures

    def violations(self) -> dict[str, list[dict[str, str]]]:
        if self.egress is None:
            return {}
        return {node: self.egress.violations(node) for node in self.egress.nodes}

    def record(self, results: dict[str, Any]) -> None:
        if self.store is None:
            return
        with contextlib.suppress(RunStoreError):  # the results file stays the record
            self.store.add_events(self.run_id, self.events)
            self.store.finish_run(results)
        self.store.close()


def _open_store(run_id: str, plan: Plan, policy: Policy, started_at: datetime) -> RunStore | None:
    """The run history (SQLite); the run is visible there from its start. A store that
    cannot be written is reported and skipped: the results file is the portable record."""
    workflow = {
        "name": plan.workflow.name,
        "path": plan.document.path,
        "sha256": plan.document.sha256,
    }
    try:
        store = RunStore.open()
        store.start_run(run_id, workflow, {"name": policy.name}, started_at)
    except RunStoreError as error:
        log.warning("run store unavailable: %s", error)
        return None
    return store


def _unreachable(emit: Emit) -> Unreachable:
    """The egress proxy's failed upstream connections, as events, as they happen."""

    def report(node: str, target: str, reason: str) -> None:
        emit(EgressUnreachable(node, target, reason, datetime.now(UTC)))

    return report


def _redacting(emit: Emit, redactor: Redactor) -> Emit:
    """Events reach views (terminal, JSON lines, CI logs) with secrets redacted."""

    def redacted(event: Event) -> None:
        if redactor:
            event = redactor.event(event)
        emit(event)

    return redacted
