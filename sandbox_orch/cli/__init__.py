"""The command line (CONTRACT 2). Thin: parse options, call the core, map errors to exit codes.

This module holds the `main` group and what every command shares; the commands are in
workflows.py (validate, plan, run), single.py, agents.py (convert, commands) and
maintenance.py (runtimes, runs, images, gc, doctor, policy review).

A command line that answers at once: these modules import click and light modules only;
what a command uses is imported in its body, when it runs (`--help` imports no command's
work). tests/unit/test_cli_imports.py holds each command to what it may import."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .. import __version__
from ..errors import ExitCode, InputRefused, SandboxOrchError
from ..status import RunStatus

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
            from ..redaction import scrub

            # A refusal is one `FILE:LINE: field: message` line per problem, nothing more.
            refused = isinstance(error, InputRefused)
            click.echo(scrub(str(error) if refused else f"sandbox-orch: {error}"), err=True)
            sys.exit(int(error.exit_code))
        except KeyboardInterrupt:
            # Ctrl-C is 130 for every command (CONTRACT), not click's "Aborted!" and 1.
            # Commands that start work handle it themselves, to say what was removed.
            click.echo("sandbox-orch: interrupted", err=True)
            sys.exit(int(ExitCode.INTERRUPTED))
        except Exception:
            import traceback

            from ..redaction import scrub

            # A bug is never "the work failed" (exit 1) to a CI system reading the code.
            click.echo(scrub(traceback.format_exc()), err=True, nl=False)
            click.echo("sandbox-orch: internal error (a bug; the traceback is above)", err=True)
            sys.exit(int(ExitCode.INFRASTRUCTURE))

    return wrapper  # type: ignore[return-value]


@click.group()
@click.version_option(__version__, prog_name="sandbox-orch")
def main() -> None:
    """Run untrusted commands and AI coding agents in disposable, hardened containers."""
    from ..redaction import scrub_log_records
    from ..stdout import closed_stdout_to_devnull

    scrub_log_records()
    closed_stdout_to_devnull()  # `>&-`: a run that prints nowhere, not a traceback


# Input files are checked by their loaders (yamlsafe.read_regular), which refuse what is
# missing or not a regular file in one `FILE: message` line, exit 2: click's own checks
# would print a multi-line usage error instead. Output files are checked before the run.
INPUT_FILE = click.Path(path_type=Path)
OUTPUT_FILE = click.Path(path_type=Path)


workflow_argument = click.argument("workflow", type=INPUT_FILE)
policy_option = click.option(
    "--policy",
    "policy",
    default=None,
    help="Policy file, or a shipped policy's name: default, ci, agents "
    "(else $SANDBOX_ORCH_POLICY, else default).",
)


# The commands, registered on `main` as their modules load.
from . import agents, export, maintenance, schema, setup, single, workflows  # noqa: E402, F401
