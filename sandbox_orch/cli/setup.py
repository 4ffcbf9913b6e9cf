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
    from ..enginesetup import NO_BASH, engine_up_command, gvisor_outcome, run_engine_up
    from ..enginesetup import script_outcome as outcome_of

    command = engine_up_command()
    if command is None:
        click.echo(NO_BASH, err=True)
        sys.exit(int(ExitCode.INFRASTRUCTURE))
    outcome = outcome_of(run_engine_up(command))
    if outcome.code != ExitCode.OK:
        if outcome.message:
            click.echo(outcome.message, err=True)
        sys.exit(int(outcome.code))

    from ..backend.docker import runtimes_of
    from ..engine import docker_backend

    info = docker_backend().client.info()
    gvisor = gvisor_outcome(runtimes_of(info), require=require_runsc)
    click.echo(gvisor.message, err=gvisor.code != ExitCode.OK)
    if gvisor.code != ExitCode.OK:
        sys.exit(int(gvisor.code))
    click.echo(f"engine ready: Docker {info.get('ServerVersion', '?')}")
    click.echo("next: sandbox-orch images build")


@main.command()
@click.argument("directory", required=False, default=".", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite the starter files if they exist.")
@exits_with_contract_codes
def init(directory: Path, force: bool) -> None:
    """Write a starter workflow and policy into DIRECTORY (default: here)."""
    from ..starter import write_starter

    for path, what in write_starter(directory, force=force):
        click.echo(f"wrote {path} ({what})")
    workflow, policy = (directory / name for name in ("workflow.yaml", "policy.yaml"))
    click.echo(f"next: sandbox-orch run {workflow} --policy {policy}")
