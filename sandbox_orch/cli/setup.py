"""Getting started from an installed tool: `setup` (the engine) and `init` (starter files)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import ExitCode
from . import exits_with_contract_codes, main

# What a command does is imported when it runs (see __init__.py): `--help` stays fast.


@main.command()
@click.option(
    "--require-runsc",
    is_flag=True,
    help="Exit 3 unless the engine has gVisor (runtime runsc) as the ci and agents policies need.",
)
@exits_with_contract_codes
def setup(require_runsc: bool) -> None:
    """Install and start the Docker engine with gVisor, as root on Debian (what `make
    engine` does); elsewhere, say what to install. An engine that answers is kept as it
    is (only an out-of-date gVisor registration of ours is renewed)."""
    import shutil

    from ..enginesetup import CALLER, engine_info, gvisor_outcome, needs_script
    from ..errors import InfrastructureError

    info = engine_info()
    if needs_script(info is not None, shutil.which("docker") is not None):
        _run_script()
        info = engine_info()
    else:
        click.echo(f"{CALLER}: engine already answering (no docker command here)", err=True)
    if info is None:
        raise InfrastructureError("no Docker engine answers after set-up (see above)")

    from ..backend.docker import runtimes_of

    gvisor = gvisor_outcome(runtimes_of(info), require=require_runsc)
    click.echo(gvisor.message, err=gvisor.problem)
    if gvisor.code != ExitCode.OK:
        sys.exit(int(gvisor.code))
    click.echo(f"engine ready: server version {info.get('ServerVersion', '?')}")
    click.echo("next: sandbox-orch images build")


def _run_script() -> None:
    """engine-up; exits 3 when it cannot make an engine answer."""
    from ..enginesetup import NO_BASH, engine_up_command, run_engine_up, script_outcome

    command = engine_up_command()
    if command is None:
        click.echo(NO_BASH, err=True)
        sys.exit(int(ExitCode.INFRASTRUCTURE))
    outcome = script_outcome(run_engine_up(command))
    if outcome.code != ExitCode.OK:
        if outcome.message:
            click.echo(outcome.message, err=True)
        sys.exit(int(outcome.code))


@main.command()
@click.argument("directory", required=False, default=".", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite the starter files if they exist.")
@exits_with_contract_codes
def init(directory: Path, force: bool) -> None:
    """Write a starter workflow and policy into DIRECTORY (default: here)."""
    import shlex

    from ..starter import write_starter

    for path, what in write_starter(directory, force=force):
        click.echo(f"wrote {path} ({what})")
    workflow, policy = (shlex.quote(str(directory / n)) for n in ("workflow.yaml", "policy.yaml"))
    click.echo(f"next: sandbox-orch run {workflow} --policy {policy}")
