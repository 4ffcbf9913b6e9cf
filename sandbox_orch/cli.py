"""The command line (CONTRACT 2). Thin: parse options, call the core, map errors to exit codes."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from . import __version__
from .backend import ImageMissing
from .errors import ExitCode, InputRefused, Problem, SandboxOrchError
from .orchestrator import RunOptions, prepare, run_plan
from .policy import choose_policy_path, load_policy
from .redaction import scrub, scrub_log_records
from .scheduler import DEFAULT_MAX_PARALLEL
from .status import RunStatus
from .store import new_run_id
from .view import PROGRESS_EVERY, JsonView, LiveView, PlainView

F = TypeVar("F", bound=Callable[..., Any])

RUN_EXIT = {
    RunStatus.SUCCEEDED: ExitCode.OK,
    RunStatus.FAILED: ExitCode.FAILED,
    RunStatus.ERRORED: ExitCode.INFRASTRUCTURE,
    RunStatus.CANCELLED: ExitCode.INTERRUPTED,
}


def exits_with_contract_codes(command: F) -> F:
    """Every SandboxOrchError ends the command with its message and its exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except SandboxOrchError as error:
            # A refusal is one `FILE:LINE: field: message` line per problem, nothing more.
            refused = isinstance(error, InputRefused)
            click.echo(scrub(str(error) if refused else f"sandbox-orch: {error}"), err=True)
            sys.exit(int(error.exit_code))
        except Exception:
            # A bug is never "the work failed" (exit 1) to a CI system reading the code.
            click.echo(scrub(traceback.format_exc()), err=True, nl=False)
            click.echo("sandbox-orch: internal error (a bug; the traceback is above)", err=True)
            sys.exit(int(ExitCode.INFRASTRUCTURE))

    return wrapper  # type: ignore[return-value]


@click.group()
@click.version_option(__version__, prog_name="sandbox-orch")
def main() -> None:
    """Run untrusted commands and AI coding agents in disposable, hardened containers."""
    scrub_log_records()


# Input files are checked by their loaders (yamlsafe.read_regular), which refuse what is
# missing or not a regular file in one `FILE: message` line, exit 2: click's own checks
# would print a multi-line usage error instead. Output files are checked before the run.
INPUT_FILE = click.Path(path_type=Path)
OUTPUT_FILE = click.Path(path_type=Path)


def _budget_option(metric: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A --budget-* value checked as a workflow's would be: a block limit, or None."""

    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        from .agents.budgets import parse_usd
        from .units import parse_count

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
    from .units import parse_duration

    try:
        return parse_duration(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


workflow_argument = click.argument("workflow", type=INPUT_FILE)
policy_option = click.option(
    "--policy",
    "policy",
    default=None,
    help="Policy file (else $SANDBOX_ORCH_POLICY, else default).",
)


@main.command()
@workflow_argument
@policy_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@exits_with_contract_codes
def validate(workflow: Path, policy: str | None, as_json: bool) -> None:
    """Parse, check the graph and admit every node against the policy; start nothing."""
    from .agents.commandcheck import slash_command_warnings

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
    from .plan_render import RENDERERS

    prepared = prepare(workflow, choose_policy_path(policy))
    click.echo(RENDERERS[fmt](prepared.plan, prepared.sandboxes))


@main.command()
@workflow_argument
@policy_option
@click.option("--max-parallel", type=click.IntRange(1, 256), default=DEFAULT_MAX_PARALLEL)
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
@exits_with_contract_codes
def run(
    workflow: Path,
    policy: str | None,
    max_parallel: int,
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
) -> None:
    """Run a workflow: every node in its own disposable, hardened container."""
    prepared = prepare(workflow, choose_policy_path(policy))
    from .admission import check_report_files

    check_report_files({"--results": results_file, "--junit": junit_file}, prepared.sandboxes)
    view = _choose_view(prepared.plan, as_json, ci, progress_every)
    options = RunOptions(
        max_parallel=max_parallel,
        keep_going=keep_going,
        results_file=results_file,
        budget=_cli_budget(budget_usd, budget_tokens, prepared.policy),
        start_at=_start_at(start_at),
        countdown_every=CI_COUNTDOWN_EVERY if isinstance(view, PlainView) else None,
        stagger=_stagger(stagger),
    )
    try:
        report = asyncio.run(
            _with_backend(
                lambda backend, interrupt: run_plan(
                    prepared.plan, prepared.policy, prepared.sandboxes, backend, new_run_id(),
                    view, interrupt, options,
                )
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
    from .agents.budgets import Budget, over_ceiling

    budget = Budget(usd=usd, tokens=tokens)
    if policy.agents.budget is not None:
        for metric, why in over_ceiling(budget, policy.agents.budget):
            raise click.BadParameter(why, param_hint=f"'--budget-{metric}'")
    return budget


# `--ci`: a countdown line at once and then this often (the live view counts every second;
# `--json` gets one `run_waiting` event).
CI_COUNTDOWN_EVERY = 60.0


def _start_at(text: str | None) -> datetime | None:
    from .timing.startat import StartAtError, parse_start_at

    if text is None:
        return None
    try:
        return parse_start_at(text, datetime.now(UTC))
    except StartAtError as error:
        raise InputRefused([Problem("--start-at", None, "", str(error))]) from None


def _stagger(text: str | None) -> float:
    from .units import parse_duration

    if text is None:
        return 0.0
    try:
        return parse_duration(text)
    except ValueError as error:
        raise InputRefused([Problem("--stagger", None, "", str(error))]) from None


def _ci_reports(report: Any, junit_file: Path | None, as_json: bool) -> None:
    """JUnit if asked; on GitHub Actions, log groups, annotations and a step summary."""
    from .reports import github_annotations, github_step_summary, in_github_actions, junit_xml
    from .store import write_text

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


def _choose_view(
    plan: Any, as_json: bool, ci: bool, progress_every: float = PROGRESS_EVERY
) -> Callable[..., None]:
    if as_json:
        return JsonView()
    if ci or not sys.stdout.isatty() or os.environ.get("CI") == "true":
        return PlainView(progress_every=progress_every)
    return LiveView(plan)


async def _with_backend(work: Callable[[Any, asyncio.Event], Any]) -> Any:
    """Run `work(backend, interrupt)`: SIGINT/SIGTERM set the interrupt (the run then
    removes what it started and reports `cancelled`); the backend is always closed."""
    from .engine import docker_backend

    interrupt = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupt.set)
    backend = docker_backend()
    try:
        report = await work(backend, interrupt)
    finally:
        await backend.close()
    for failure in report.cleanup_failures:
        click.echo(scrub(f"sandbox-orch: could not remove {failure}"), err=True)
    return report


@main.command()
@click.argument("runtime")
@click.option(
    "--workspace",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="Copied into the sandbox at /workspace.",
)
@click.option("--prompt", default=None, help="The task, for agent runtimes (claude, codex).")
@policy_option
@click.option("--env", "env_pairs", multiple=True, metavar="NAME=VALUE")
@click.option("--egress", multiple=True, metavar="HOST:PORT")
@click.option("--secret", "secret_names", multiple=True, metavar="NAME")
@click.option("--results", "results_file", type=OUTPUT_FILE)
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line on stdout.")
@click.option("--ci", is_flag=True, help="Plain lines, no live redraw.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@exits_with_contract_codes
def single(
    runtime: str,
    workspace: Path,
    prompt: str | None,
    policy: str | None,
    env_pairs: tuple[str, ...],
    egress: tuple[str, ...],
    secret_names: tuple[str, ...],
    results_file: Path | None,
    as_json: bool,
    ci: bool,
    args: tuple[str, ...],
) -> None:
    """One node of RUNTIME with a copy of the workspace; changes come back as a patch.

    After `--`, ARGS is the command (shell, python, node) or extra CLI arguments (agents).
    """
    from .single import SingleRequest, run_single, single_plan

    request = SingleRequest(
        runtime=runtime,
        workspace=workspace.resolve(),
        prompt=prompt,
        args=args,
        env=_env_pairs(env_pairs),
        egress=egress,
        secrets=secret_names,
    )
    loaded = load_policy(choose_policy_path(policy))
    from .admission import check_report_files

    check_report_files({"--results": results_file}, {}, request.workspace)
    view = _choose_view(single_plan(request), as_json, ci)
    report = asyncio.run(
        _with_backend(
            lambda backend, interrupt: run_single(
                request, loaded, backend, new_run_id(), view, interrupt, results_file
            )
        )
    )
    if report.patch is not None and not as_json:
        size = report.patch.stat().st_size
        click.echo(f"changes: {report.patch} ({size} bytes; apply with: git apply {report.patch})")
    sys.exit(int(RUN_EXIT[report.status]))


def _env_pairs(pairs: tuple[str, ...]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InputRefused([Problem("--env", None, "", f"{pair!r} is not NAME=VALUE")])
        env[name] = value
    return env


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.argument("workflow", required=False, type=INPUT_FILE)
@exits_with_contract_codes
def runtimes(as_json: bool, workflow: Path | None) -> None:
    """Presets (and a workflow's custom runtimes), their images and whether they are built."""
    from .runtimes import PRESETS, runtimes_of

    table = PRESETS
    if workflow is not None:
        from .loading import load_workflow

        table = runtimes_of(load_workflow(workflow)[1])
    built = asyncio.run(_images_built([r.image for r in table.values()]))
    rows = [
        {
            "name": r.name,
            "kind": "agent" if r.agent else ("preset" if r.preset else "custom"),
            "image": r.image,
            "built": built[r.image],
            "entrypoint": list(r.entrypoint),
            "parse": r.parse.format,
            "secrets": list(r.secrets),
            "egress": list(r.egress),
        }
        for r in table.values()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        state = "built" if row["built"] else "not built (sandbox-orch images build)"
        needs = f"; requests {', '.join(row['secrets'] + row['egress'])}" if row["secrets"] else ""
        click.echo(f"{row['name']:<8} {row['kind']:<6} {row['image']:<22} {state}{needs}")


@main.group()
def convert() -> None:
    """Bring configs of other tools over as workflows."""


@convert.command("zen")
@click.argument("config", type=INPUT_FILE)
@exits_with_contract_codes
def convert_zen(config: Path) -> None:
    """Print the workflow YAML equivalent to a zen config (docs/zen-migration.md).

    `run`, `validate` and `plan` take a zen config as it is; this shows what they run.
    """
    from .agents.convert import zen_yaml

    click.echo(zen_yaml(config, os.environ), nl=False)


async def _images_built(images: list[str]) -> dict[str, bool]:
    from .engine import docker_backend

    backend = docker_backend()
    found = {}
    try:
        for image in images:
            try:
                await backend.image_id(image)
                found[image] = True
            except ImageMissing:
                found[image] = False
    finally:
        await backend.close()
    return found


@main.group()
def runs() -> None:
    """Run history (the SQLite run store)."""


@runs.command("list")
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@exits_with_contract_codes
def runs_list(limit: int, as_json: bool) -> None:
    """Newest first: id, workflow, status, start, duration, tokens."""
    from .runstore import RunStore, runs_table

    with RunStore.open() as store:
        rows = store.list_runs(limit)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(row) for row in rows], indent=2))
    else:
        click.echo(runs_table(rows))


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="The results document.")
@exits_with_contract_codes
def runs_show(run_id: str, as_json: bool) -> None:
    """A run's results (a unique prefix of its id is enough)."""
    from .runstore import RunStore

    with RunStore.open() as store:
        found = store.resolve(run_id)
        if found is None:
            candidates = store.matches(run_id)
            why = f"ambiguous: {', '.join(candidates)}" if candidates else "no such run"
            raise InputRefused([Problem("runs", None, "RUN_ID", f"{run_id!r}: {why}")])
        results = store.results(found)
        row = store.run(found)
    if results is None:
        assert row is not None
        raise InputRefused(
            [Problem("runs", None, "RUN_ID", f"{found} has not finished ({row.status})")]
        )
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    workflow, status, took = results["workflow"]["name"], results["status"], results["duration_s"]
    click.echo(f"run {found}: {workflow} {status} in {took}s")
    for name, node in results["nodes"].items():
        why = f"  {node['reason']}" if node.get("reason") else ""
        click.echo(f"  {name:<24} {node['status']:<10} exit {node['exit_code']}{why}")


@main.group()
def commands() -> None:
    """A workspace's slash commands (.claude/commands), read as untrusted files."""


workspace_option = click.option(
    "--workspace",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="The workspace whose .claude/commands to read.",
)


@commands.command("list")
@workspace_option
@click.option("--json", "as_json", is_flag=True)
@exits_with_contract_codes
def commands_list(workspace: Path, as_json: bool) -> None:
    """Each command: name, argument hint, description; what was skipped, and why."""
    from .agents.commands import read_commands
    from .text import one_line

    found = read_commands(workspace)
    if as_json:
        click.echo(json.dumps(_commands_json(workspace, found), indent=2))
        return
    for command in found.commands.values():
        hint = f" {command.argument_hint}" if command.argument_hint else ""
        about = f"  {command.description}" if command.description else ""
        click.echo(one_line(f"/{command.name}{hint}{about}"))
    if not found.commands:
        click.echo(f"no slash commands in {one_line(str(workspace))}/.claude/commands")
    for skipped in found.skipped:
        click.echo(one_line(f"skipped {skipped.path}: {skipped.reason}"), err=True)


@commands.command("show")
@click.argument("name")
@workspace_option
@click.option("--json", "as_json", is_flag=True)
@exits_with_contract_codes
def commands_show(name: str, workspace: Path, as_json: bool) -> None:
    """One command: its frontmatter and its prompt (NAME, `dir:name`, or a unique bare name)."""
    from .agents.commands import read_commands
    from .text import one_line

    found = read_commands(workspace)
    command = found.find(name)
    if command is None:
        candidates = found.candidates(name)
        why = (
            f"ambiguous: {', '.join('/' + c.name for c in candidates)}"
            if candidates
            else f"not found in {workspace}/.claude/commands"
        )
        raise InputRefused([Problem("commands", None, "NAME", f"{name!r}: {why}")])
    if as_json:
        click.echo(json.dumps({**command.as_json(), "body": command.body}, indent=2))
        return
    click.echo(one_line(f"/{command.name}  ({command.path})"))
    for label, value in (
        ("description", command.description),
        ("argument-hint", command.argument_hint),
        ("allowed-tools", ", ".join(command.allowed_tools)),
        ("model", command.model),
    ):
        if value:
            click.echo(one_line(f"{label}: {value}"))
    for problem in command.problems:
        click.echo(one_line(f"ignored {problem}"))
    # Each prompt line behind a marker: no line of the file starts a line of output (a CI
    # runner obeys `::command::` lines), and control characters are escaped.
    click.echo("prompt:")
    for line in command.body.splitlines():
        click.echo(f"  | {one_line(line)}")


def _commands_json(workspace: Path, found: Any) -> dict[str, Any]:
    return {
        "workspace": str(workspace),
        "commands": [c.as_json() for c in found.commands.values()],
        "skipped": [{"path": s.path, "reason": s.reason} for s in found.skipped],
    }


@main.group()
def images() -> None:
    """Build the sandbox images."""


@images.command("build")
@click.argument("names", nargs=-1)
@exits_with_contract_codes
def images_build(names: tuple[str, ...]) -> None:
    """Build images (all, or NAMES and what they need), in dependency order."""
    from .engine import docker_backend
    from .errors import InfrastructureError, InputRefused, Problem
    from .images import build_images, build_order

    try:
        build_order(list(names) or None)
    except ValueError as error:
        raise InputRefused([Problem("images", None, "", str(error))]) from None
    backend = docker_backend()
    try:
        for outcome in build_images(backend.client, list(names) or None, log=click.echo):
            state = "built" if outcome.built else "up to date"
            click.echo(f"{outcome.ref}: {state} ({outcome.image_id[:19]})")
    except RuntimeError as error:
        raise InfrastructureError(str(error)) from None


@main.command()
@exits_with_contract_codes
def gc() -> None:
    """Remove containers, networks and volumes of runs that are no longer alive."""
    from .engine import docker_backend
    from .gc import collect_garbage

    async def collect() -> None:
        backend = docker_backend()
        try:
            report = await collect_garbage(backend)
        finally:
            await backend.close()
        for resource in report.removed:
            run_id = resource.labels.get("sandbox-orch.run", "?")
            click.echo(f"removed {resource.kind} {resource.id[:12]} (run {run_id})")
        click.echo(f"{len(report.removed)} removed, {len(report.kept)} kept (owned by live runs)")

    asyncio.run(collect())


@main.command()
@exits_with_contract_codes
def doctor() -> None:
    """Engine, OCI runtimes, images, and the isolation each shipped policy would get."""
    from .backend.docker import runtimes_of
    from .doctor import describe_volume_store, policy_isolations, protections, runtime_version
    from .engine import docker_backend
    from .images import available_images, image_ref

    async def check() -> None:
        backend = docker_backend()
        try:
            version = backend.client.version().get("Version", "?")
            click.echo(f"engine: Docker {version}")
            info = await backend.info()
            runtimes = runtimes_of(info)
            for name in ("runc", "runsc"):
                state = "missing"
                if name in runtimes:
                    args = " ".join(runtimes[name])
                    state = f"available{f' ({args})' if args else ''}"
                click.echo(f"runtime {name}: {state}")
            # Run the registered runsc only when the engine is on this host.
            path = ((info.get("Runtimes") or {}).get("runsc") or {}).get("path")
            runsc = runtime_version(path) if backend.socket_path else None
            for line in protections(info, runtimes, runsc):
                click.echo(line)
            click.echo(f"artifact volumes: {await describe_volume_store(backend)}")
            for name in available_images():
                try:
                    image_id = await backend.image_id(image_ref(name))
                    click.echo(f"image {image_ref(name)}: built ({image_id[:19]})")
                except ImageMissing:
                    click.echo(f"image {image_ref(name)}: not built (sandbox-orch images build)")
        finally:
            await backend.close()
        for isolation in policy_isolations(runtimes):
            click.echo(f"policy {isolation.policy} ({isolation.path}): {isolation.summary}")

    asyncio.run(check())


@main.group("policy")
def policy_group() -> None:
    """Review policy files."""


@policy_group.command("review")
@click.argument("policy_file", metavar="POLICY", type=INPUT_FILE)
@click.option(
    "--workflow",
    type=INPUT_FILE,
    help="Also show each node's effective privileges under this policy.",
)
@click.option(
    "--against",
    type=INPUT_FILE,
    metavar="OLD_POLICY",
    help="Also show what changing from OLD_POLICY to POLICY widens or narrows.",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json", "sarif"]), default="table")
@click.option(
    "--fail-on",
    type=click.Choice(["critical", "high", "medium", "low", "info"], case_sensitive=False),
    help="Exit 1 when a finding is at or above this severity.",
)
@exits_with_contract_codes
def policy_review(
    policy_file: Path, workflow: Path | None, against: Path | None, fmt: str, fail_on: str | None
) -> None:
    """Security review of a policy: findings with id, severity, file:line, why and fix."""
    from . import review as reviewing
    from .policy import load_policy

    policy = load_policy(policy_file)
    privileges = None
    if workflow is not None:
        prepared = prepare(workflow, policy_file)
        privileges = reviewing.privileges(prepared.plan, prepared.sandboxes)
    report = reviewing.build_report(
        policy,
        privileges=privileges,
        workflow=str(workflow) if workflow is not None else None,
        against=load_policy(against) if against is not None else None,
        fail_on=fail_on.lower() if fail_on else None,
    )
    if fmt == "json":
        click.echo(json.dumps(reviewing.to_json(report), indent=2))
    elif fmt == "sarif":
        click.echo(json.dumps(reviewing.to_sarif(report), indent=2))
    else:
        from rich.console import Console

        console = Console(highlight=False)
        if not console.is_terminal and not os.environ.get("COLUMNS"):
            console = Console(highlight=False, width=120)
        for renderable in reviewing.to_table(report):
            console.print(renderable)
    sys.exit(int(ExitCode.FAILED if report.failed else ExitCode.OK))
