"""`sandbox-orch schema workflow|policy`: the JSON Schema of a file format, for editors."""

from __future__ import annotations

import click

from . import exits_with_contract_codes, main


@main.command()
@click.argument("kind", metavar="workflow|policy", type=click.Choice(["workflow", "policy"]))
@exits_with_contract_codes
def schema(kind: str) -> None:
    """Print the JSON Schema of the workflow or policy file format.

    For completion and checking in an editor: `sandbox-orch schema workflow >
    workflow.schema.json`, then `# yaml-language-server: $schema=workflow.schema.json` as
    a YAML file's first line. Generated from the loader's own definitions."""
    from ..editorschema import tidy

    if kind == "workflow":
        from ..editorschema.workflow import workflow_schema

        click.echo(tidy.render(workflow_schema()), nl=False)
    else:
        from ..editorschema.policy import policy_schema

        click.echo(tidy.render(policy_schema()), nl=False)
