"""Agents' commands: configs of other tools brought over, a workspace's slash commands."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from ..errors import InputRefused, Problem
from . import (
    INPUT_FILE,
    exits_with_contract_codes,
    main,
)


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
    from ..agents.convert import zen_yaml

    click.echo(zen_yaml(config, os.environ), nl=False)


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
    from ..agents.commands import read_commands
    from ..text import one_line

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
    from ..agents.commands import read_commands
    from ..text import one_line

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
