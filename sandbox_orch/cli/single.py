"""`single`: one node (a command or an AI coding agent) on a copy of a workspace; its
changes come back as a patch."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from ..errors import InputRefused, Problem
from ..policy import choose_policy_path, load_policy
from ..runtimes import is_agent
from ..store import new_run_id
from . import OUTPUT_FILE, RUN_EXIT, exits_with_contract_codes, main, policy_option
from .workflows import choose_view, with_backend


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
    from ..single import SingleRequest, run_single, single_plan

    request = SingleRequest(
        runtime=runtime,
        workspace=workspace.resolve(),
        prompt=prompt,
        args=args,
        env=_env_pairs(env_pairs),
        egress=egress,
        secrets=secret_names,
        # An agent with no prompt, in a terminal: its own interface (refused, with a
        # hint, without a terminal).
        interactive=prompt is None and is_agent(runtime) and _in_terminal(),
    )
    loaded = load_policy(choose_policy_path(policy))
    from ..admission import check_report_files

    check_report_files({"--results": results_file}, {}, request.workspace)
    # No live redraw over an interactive session's screen: plain lines, held meanwhile.
    view = choose_view(single_plan(request), as_json, ci or request.interactive)
    report = asyncio.run(
        with_backend(
            lambda backend, interrupt: run_single(
                request, loaded, backend, new_run_id(), view, interrupt, results_file
            )
        )
    )
    if report.patch is not None and not as_json:
        size = report.patch.stat().st_size
        click.echo(f"changes: {report.patch} ({size} bytes; apply with: git apply {report.patch})")
    sys.exit(int(RUN_EXIT[report.status]))


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
