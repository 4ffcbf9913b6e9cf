"""`single`: one node (a command or an AI coding agent) on a copy of a workspace; its
changes come back as a patch."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import ExitCode, InputRefused, Problem
from ..status import RunStatus
from . import OUTPUT_FILE, RUN_EXIT, exits_with_contract_codes, main, policy_option
from .workflows import choose_view, with_backend

if TYPE_CHECKING:
    from ..events import Event
    from ..orchestrator import RunReport
    from ..single.request import SingleRequest

# What the command does is imported when it runs (see __init__.py): `--help` stays fast.


@main.command()
@click.argument("runtime")
@click.option(
    "--workspace",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Copied into the sandbox at /workspace (default: the git repository's root, "
    "else the current directory).",
)
@click.option(
    "--exclude",
    "excludes",
    multiple=True,
    metavar="PATTERN",
    help="Leave matching files out of the copy and the patch (repeatable).",
)
@click.option(
    "--apply",
    "apply_patch",
    is_flag=True,
    help="Apply the patch to the workspace after a successful run, if it is unchanged.",
)
@click.option(
    "--branch",
    default=None,
    metavar="NAME",
    help="Commit the changes on a new branch NAME (the working tree is not touched).",
)
@click.option("--prompt", default=None, help="The task, for agent runtimes (claude, codex).")
@click.option(
    "--continue",
    "continue_from",
    default=None,
    metavar="RUN_ID",
    help="Continue the agent's session of an earlier `single` run (claude, codex).",
)
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
    workspace: Path | None,
    excludes: tuple[str, ...],
    apply_patch: bool,
    branch: str | None,
    prompt: str | None,
    continue_from: str | None,
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
    import asyncio

    from ..policy import choose_policy_path, load_policy
    from ..runtimes import is_agent
    from ..single import run_single, single_plan
    from ..single.delivery import default_workspace
    from ..single.request import SingleRequest
    from ..single.session import kept_session
    from ..store import new_run_id
    from ..view import LiveView

    request = SingleRequest(
        runtime=runtime,
        workspace=(workspace or default_workspace(Path.cwd())).resolve(),
        prompt=prompt,
        args=args,
        env=_env_pairs(env_pairs),
        egress=egress,
        secrets=secret_names,
        excludes=excludes,
        apply=apply_patch,
        branch=branch,
        continue_from=continue_from,
        # An agent with no prompt, in a terminal: its own interface (refused, with a
        # hint, without a terminal).
        interactive=prompt is None and is_agent(runtime) and _in_terminal(),
    )
    loaded = load_policy(choose_policy_path(policy))
    from ..admission import check_report_files

    check_report_files({"--results": results_file}, {}, request.workspace)
    # No live redraw over an interactive session's screen: plain lines, held meanwhile.
    view = choose_view(single_plan(request), as_json, ci or request.interactive)
    if continue_from is not None:  # refused before the engine is asked anything
        kept_session(continue_from, runtime)
    shown = view if as_json else _answer_at_the_end(view)
    try:
        report = asyncio.run(
            with_backend(
                lambda backend, interrupt: run_single(
                    request, loaded, backend, new_run_id(), shown, interrupt, results_file
                )
            )
        )
    except KeyboardInterrupt:  # before the run's own handler: nothing was started
        click.echo("sandbox-orch: interrupted; nothing was started", err=True)
        sys.exit(int(ExitCode.INTERRUPTED))
    finally:
        if isinstance(view, LiveView):
            view.close()
    given = choose_policy_path(policy) if policy else None  # for the continue hint
    sys.exit(int(_say_how_it_ended(report, request, as_json, given)))


def _say_how_it_ended(
    report: RunReport, request: SingleRequest, as_json: bool, policy: Path | None = None
) -> ExitCode:
    """The answer (or the agent's error), where the changes are and what became of them;
    the exit code. The patch is already written: a Ctrl-C now only shortens the telling."""
    from ..single.delivery import apply_command, apply_root
    from ..single.selection import find_repo
    from ..single.session import continue_hint

    interrupted = report.status == RunStatus.CANCELLED
    try:
        if not as_json:
            _tell_outcome(report)
        if report.patch is None:
            if not as_json:
                _tell("no changes")
        elif interrupted or not as_json:
            size = report.patch.stat().st_size
            root = apply_root(request.workspace, find_repo(request.workspace))
            command = apply_command(root, report.patch)
            _tell(
                f"changes: {report.patch} ({size} bytes; apply with: {command})",
                essential=True,
                on_stderr=interrupted,
            )
        if report.delivered is not None and not as_json:
            _tell(report.delivered, essential=True)
        hint = continue_hint(report.run_id, request.runtime, policy, request.interactive)
        if hint and not as_json:
            _tell(hint)
    except KeyboardInterrupt:  # while saying it: the patch is written, say where
        click.echo(f"sandbox-orch: interrupted; changes: {report.patch}", err=True)
        return ExitCode.INTERRUPTED
    return ExitCode.INTERRUPTED if interrupted else RUN_EXIT[report.status]


def _in_terminal() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def _env_pairs(pairs: tuple[str, ...]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InputRefused([Problem("--env", None, "", f"{pair!r} is not NAME=VALUE")])
        env[name] = value
    return env


def _answer_at_the_end(view: Callable[[Event], None]) -> Callable[[Event], None]:
    """For people, the agent's answer is printed once, whole, after the run (not as the
    view's few-line preview); --json keeps it in node_finished."""
    from ..events import NodeFinished

    def show(event: Event) -> None:
        if isinstance(event, NodeFinished) and event.answer:
            event = dataclasses.replace(event, answer=None)
        view(event)

    return show


def _tell_outcome(report: RunReport) -> None:
    """The agent's final answer, or why the node failed (its own words, else stderr)."""
    from ..single.outcome import closing_lines
    from ..single.request import NODE

    node = report.results.get("nodes", {}).get(NODE, {})
    path = str(report.results_path) if report.results_path else None
    for line in closing_lines(node, path):
        _tell(line)


def _tell(line: str, essential: bool = False, on_stderr: bool = False) -> None:
    """A line for people on stdout; an essential one (where the patch is) goes to stderr
    when stdout's reader went away (`| head`), and when asked (Ctrl-C)."""
    from ..redaction import scrub
    from ..stdout import write_line

    line = scrub(line)
    if on_stderr or (not write_line(sys.stdout, line) and essential):
        click.echo(line, err=True)
