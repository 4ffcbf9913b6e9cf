"""Workflows: validate, plan and run them."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import InputRefused, Problem
from . import (
    OUTPUT_FILE,
    RUN_EXIT,
    exits_with_contract_codes,
    main,
    policy_option,
    workflow_argument,
)
from .cluster import BackendChoice, backend_options

if TYPE_CHECKING:
    import asyncio

# What a command does is imported when it runs (see __init__.py): `--help` stays fast.


def _budget_option(metric: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A --budget-* value checked as a workflow's would be: a block limit, or None."""

    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        from ..agents.budgets import parse_usd
        from ..units import parse_count

        try:
            number = float(value) if metric == "usd" else int(value)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a number") from None
        try:
            limit = parse_usd(number) if metric == "usd" else parse_count(number, 1, 10**12)
        except ValueError as error:
            raise click.BadParameter(str(error)) from None
        return {"limit": limit, "mode": "block"}

    return check


def _duration_option(ctx: click.Context, param: click.Parameter, value: Any) -> float:
    from ..units import parse_duration

    try:
        return parse_duration(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@main.command()
@workflow_argument
@policy_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@exits_with_contract_codes
def validate(workflow: Path, policy: str | None, as_json: bool) -> None:
    """Parse, check the graph and admit every node against the policy; start nothing."""
    from ..agents.commandcheck import slash_command_warnings
    from ..policy import choose_policy_path
    from ..preparing import prepare

    prepared = prepare(workflow, choose_policy_path(policy))
    warnings = slash_command_warnings(prepared.plan, prepared.sandboxes)
    for warning in warnings:
        click.echo(str(warning), err=True)  # Problem escapes what it quotes
    summary = {
        "valid": True,
        "workflow": prepared.plan.workflow.name,
        "policy": prepared.policy.name,
        "nodes": list(prepared.plan.nodes),
        "warnings": [str(w) for w in warnings],
    }
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(
            f"{workflow}: valid ({len(prepared.plan.nodes)} nodes, policy {prepared.policy.name})"
        )


@main.command()
@workflow_argument
@policy_option
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json", "mermaid", "dot"]), default="text"
)
@exits_with_contract_codes
def plan(workflow: Path, policy: str | None, fmt: str) -> None:
    """Show what `run` would do: order, conditions, each node's effective sandbox."""
    from ..plan_render import RENDERERS
    from ..policy import choose_policy_path
    from ..preparing import prepare

    prepared = prepare(workflow, choose_policy_path(policy))
    click.echo(RENDERERS[fmt](prepared.plan, prepared.sandboxes))


@main.command()
@workflow_argument
@policy_option
# Its default is the scheduler's (DEFAULT_MAX_PARALLEL), filled in when `run` runs.
@click.option("--max-parallel", type=click.IntRange(1, 256), default=None)
@click.option(
    "--ahead",
    type=click.IntRange(0, 256),
    default=None,
    metavar="N",
    help="Prepare up to N nodes' containers while their needs run, held until due "
    "(0: none).  [default: --max-parallel]",
)
@click.option("--keep-going", is_flag=True, help="Do not stop starting nodes after a failure.")
@click.option("--results", "results_file", type=OUTPUT_FILE)
@click.option(
    "--junit",
    "junit_file",
    type=OUTPUT_FILE,
    help="Also write a JUnit XML report: one testcase per node.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line on stdout.")
@click.option("--ci", is_flag=True, help="Plain lines, no live redraw.")
@click.option(
    "--budget-usd",
    callback=_budget_option("usd"),
    metavar="USD",
    help="Stop the run's agents once they have spent this much (blocks; over the workflow's).",
)
@click.option(
    "--budget-tokens",
    callback=_budget_option("tokens"),
    metavar="N",
    help="Stop the run's agents once they have used this many tokens (blocks).",
)
@click.option(
    "--progress-every",
    default="30s",
    callback=_duration_option,
    metavar="DURATION",
    help="With --ci: a progress line per running agent this often.  [default: 30s]",
)
@click.option(
    "--start-at",
    metavar="TIME",
    help="Start later: a clock time (14:30, 14:30:15; tomorrow if past), an ISO-8601 "
    "date-time, or a delay (90s, 10m, 2h). Checked first; Ctrl-C while waiting exits 130.",
)
@click.option(
    "--stagger",
    metavar="DURATION",
    help="Start agent nodes at least DURATION apart (e.g. 5s).",
)
@backend_options
@exits_with_contract_codes
def run(
    workflow: Path,
    policy: str | None,
    max_parallel: int | None,
    ahead: int | None,
    keep_going: bool,
    results_file: Path | None,
    junit_file: Path | None,
    as_json: bool,
    ci: bool,
    budget_usd: dict[str, Any] | None,
    budget_tokens: dict[str, Any] | None,
    progress_every: float,
    start_at: str | None,
    stagger: str | None,
    cluster: BackendChoice,
) -> None:
    """Run a workflow: every node in its own disposable, hardened container."""
    import asyncio

    from ..orchestrator import RunOptions, run_plan
    from ..policy import choose_policy_path
    from ..preparing import prepare
    from ..scheduler import DEFAULT_MAX_PARALLEL
    from ..store import new_run_id
    from ..view import LiveView, PlainView

    settings = cluster.settings()
    prepared = prepare(workflow, choose_policy_path(policy))
    from ..admission import check_report_files

    check_report_files({"--results": results_file, "--junit": junit_file}, prepared.sandboxes)
    view = choose_view(prepared.plan, as_json, ci, progress_every)
    options = RunOptions(
        max_parallel=DEFAULT_MAX_PARALLEL if max_parallel is None else max_parallel,
        keep_going=keep_going,
        results_file=results_file,
        budget=_cli_budget(budget_usd, budget_tokens, prepared.policy),
        start_at=_start_at(start_at),
        countdown_every=CI_COUNTDOWN_EVERY if isinstance(view, PlainView) else None,
        stagger=_stagger(stagger),
        ahead=ahead,
    )
    try:
        report = asyncio.run(
            with_backend(
                lambda backend, interrupt: run_plan(
                    prepared.plan, prepared.policy, prepared.sandboxes, backend, new_run_id(),
                    view, interrupt, options,
                ),
                _cluster_opener(settings, cluster.context, prepared),
            )
        )  # fmt: skip
    finally:
        if isinstance(view, LiveView):
            view.close()  # an interrupted wait ends before the run's last event
    _ci_reports(report, junit_file, as_json)
    sys.exit(int(RUN_EXIT[report.status]))


def _cli_budget(usd: dict[str, Any] | None, tokens: dict[str, Any] | None, policy: Any) -> Any:
    """--budget-usd/--budget-tokens, which no more than a workflow may raise the policy's
    ceiling (exit 2, nothing started)."""
    if usd is None and tokens is None:
        return None
    from ..agents.budgets import Budget, over_ceiling

    budget = Budget(usd=usd, tokens=tokens)
    if policy.agents.budget is not None:
        for metric, why in over_ceiling(budget, policy.agents.budget):
            raise click.BadParameter(why, param_hint=f"'--budget-{metric}'")
    return budget


# `--ci`: a countdown line at once and then this often (the live view counts every second;
# `--json` gets one `run_waiting` event).
CI_COUNTDOWN_EVERY = 60.0


def _start_at(text: str | None) -> datetime | None:
    from ..timing.startat import StartAtError, parse_start_at

    if text is None:
        return None
    try:
        return parse_start_at(text, datetime.now(UTC))
    except StartAtError as error:
        raise InputRefused([Problem("--start-at", None, "", str(error))]) from None


def _stagger(text: str | None) -> float:
    from ..units import parse_duration

    if text is None:
        return 0.0
    try:
        return parse_duration(text)
    except ValueError as error:
        raise InputRefused([Problem("--stagger", None, "", str(error))]) from None


def _ci_reports(report: Any, junit_file: Path | None, as_json: bool) -> None:
    """JUnit if asked; on GitHub Actions, log groups, annotations and a step summary."""
    from ..redaction import scrub
    from ..reports import github_annotations, github_step_summary, in_github_actions, junit_xml
    from ..store import write_text

    if junit_file is not None:
        write_text(junit_file, junit_xml(report.results, results_path=report.results_path))
    if in_github_actions():
        # Under --json, stdout stays pure JSON lines; the runner reads both streams.
        for line in github_annotations(report.results):
            click.echo(scrub(line), err=as_json)
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            with open(summary, "a", encoding="utf-8") as handle:
                handle.write(scrub(github_step_summary(report.results)))


def choose_view(
    plan: Any, as_json: bool, ci: bool, progress_every: float | None = None
) -> Callable[..., None]:
    """The view of the run's events; `progress_every` defaults to the view's own."""
    from ..view import PROGRESS_EVERY, JsonView, LiveView, PlainView

    if as_json:
        return JsonView()
    if ci or not sys.stdout.isatty() or os.environ.get("CI") == "true":
        every = PROGRESS_EVERY if progress_every is None else progress_every
        return PlainView(progress_every=every)
    return LiveView(plan)


def _cluster_opener(settings: Any, context: str | None, prepared: Any) -> Any:
    """`--backend kubernetes`: what opens (and checks) the cluster; None for Docker."""
    if settings is None:
        return None

    async def open_cluster() -> Any:
        from ..backend.kubernetes.opening import open_backend

        return await open_backend(settings, context, prepared.plan, prepared.sandboxes)

    return open_cluster


async def with_backend(
    work: Callable[[Any, asyncio.Event], Any], open_backend: Callable[[], Any] | None = None
) -> Any:
    """Run `work(backend, interrupt)`: SIGINT/SIGTERM set the interrupt (the run then
    removes what it started and reports `cancelled`); the backend is always closed.
    `open_backend`: another backend than Docker (awaited)."""
    import asyncio

    from ..engine import docker_backend
    from ..redaction import scrub

    interrupt = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupt.set)
    backend = await open_backend() if open_backend is not None else docker_backend()
    try:
        report = await work(backend, interrupt)
    finally:
        await backend.close()
    for failure in report.cleanup_failures:
        click.echo(scrub(f"sandbox-orch: could not remove {failure}"), err=True)
    return report
