"""`export --to argo`: print a workflow for Argo Workflows, admitted as `plan` admits it."""

from __future__ import annotations

from pathlib import Path

import click

from . import exits_with_contract_codes, main, policy_option, workflow_argument

# What the command does is imported when it runs (see __init__.py): `--help` stays fast.


def _pairs(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, mapped = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r}: expected NAME=VALUE")
        pairs[key] = mapped
    return pairs


@main.command(name="export")
@workflow_argument
@policy_option
@click.option("--to", "target", type=click.Choice(["argo"]), required=True, help="The engine.")
@click.option("--namespace", default="", help="The Workflow's namespace (default: none named).")
@click.option(
    "--runtime-class",
    "runtime_classes",
    multiple=True,
    callback=_pairs,
    metavar="OCI=CLASS",
    help="The RuntimeClass for a policy's oci_runtime (runsc=gvisor; runc= for the "
    "cluster's default). An unmapped runtime is refused.",
)
@click.option(
    "--image",
    "images",
    multiple=True,
    callback=_pairs,
    metavar="NAME=REF@sha256:...",
    help="The reference, pinned by digest, the cluster pulls for an image.",
)
@click.option(
    "--executor-service-account",
    default="sandbox-orch-executor",
    show_default=True,
    help="The ServiceAccount of Argo's own executor containers (the node's gets no token).",
)
@click.option("--keep-going", is_flag=True, help="As `run --keep-going`: no fail_fast halt.")
@exits_with_contract_codes
def export(
    workflow: Path,
    policy: str | None,
    target: str,
    namespace: str,
    runtime_classes: dict[str, str],
    images: dict[str, str],
    executor_service_account: str,
    keep_going: bool,
) -> None:
    """Print WORKFLOW as an Argo Workflow (YAML); what Argo cannot run as sandbox-orch
    would is refused (exit 2). Nothing is created."""
    import yaml

    from ..backend.kubernetes import ClusterSettings, ManifestError
    from ..errors import InputRefused, Problem
    from ..export.argo import ArgoSettings, argo_workflow
    from ..policy import choose_policy_path
    from ..preparing import prepare

    prepared = prepare(workflow, choose_policy_path(policy))
    cluster = ClusterSettings(
        runtime_classes={oci: name or None for oci, name in runtime_classes.items()},
        namespace=namespace,
        images=images,
    )
    settings = ArgoSettings(cluster, executor_service_account, keep_going)
    try:
        document = argo_workflow(prepared.plan, prepared.sandboxes, settings)
    except ManifestError as error:
        raise InputRefused([Problem(str(workflow), None, "", str(error))]) from None
    click.echo(yaml.safe_dump(document, sort_keys=False), nl=False)
