"""Looking after the tool: runtimes and images, the run history, cleanup, the engine's
health, and the security review of policies."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import click

from ..errors import ExitCode, InputRefused, Problem
from . import (
    INPUT_FILE,
    exits_with_contract_codes,
    main,
)
from .cluster import BackendChoice, backend_options

# What a command does is imported when it runs (see __init__.py): `--help` stays fast.


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.argument("workflow", required=False, type=INPUT_FILE)
@exits_with_contract_codes
def runtimes(as_json: bool, workflow: Path | None) -> None:
    """Presets (and a workflow's custom runtimes), their images and whether they are built."""
    import asyncio

    from ..runtimes import PRESETS, runtimes_of

    table = PRESETS
    if workflow is not None:
        from ..loading import load_workflow

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
            "logins": list(r.logins),
            "egress": list(r.egress),
        }
        for r in table.values()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from ..images import build_hint

    for row in rows:
        state = "built" if row["built"] else f"not built ({build_hint(row['image'])})"
        secrets = " or ".join(row["logins"]) or ", ".join(row["secrets"])
        needs = f"; requests {', '.join([secrets, *row['egress']])}" if row["secrets"] else ""
        click.echo(f"{row['name']:<8} {row['kind']:<6} {row['image']:<22} {state}{needs}")


async def _images_built(images: list[str]) -> dict[str, bool]:
    from ..backend import ImageMissing
    from ..engine import docker_backend

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
    from ..runstore import RunStore, runs_table

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
    from ..runstore import RunStore

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
def images() -> None:
    """Build the sandbox images."""


@images.command("build")
@click.argument("names", nargs=-1)
@exits_with_contract_codes
def images_build(names: tuple[str, ...]) -> None:
    """Build images (all, or NAMES and what they need), in dependency order."""
    from ..engine import docker_backend
    from ..errors import InfrastructureError, InputRefused, Problem
    from ..images import build_images, build_order

    try:
        build_order(list(names) or None)
    except ValueError as error:
        raise InputRefused([Problem("images", None, "", str(error))]) from None
    backend = docker_backend()
    try:
        # It says itself, per image, "up to date", or "building" then "built".
        build_images(backend.client, list(names) or None, log=click.echo)
    except RuntimeError as error:
        raise InfrastructureError(str(error)) from None


@main.command()
@backend_options
@exits_with_contract_codes
def gc(
    cluster: BackendChoice,
) -> None:
    """Remove containers, networks and volumes of runs that are no longer alive."""
    import asyncio

    from ..engine import docker_backend
    from ..gc import collect_garbage

    settings = cluster.settings()

    async def collect() -> None:
        if settings is None:
            engine = docker_backend()
        else:  # the namespace's Jobs, Secrets and NetworkPolicies
            from ..backend.kubernetes.opening import connected_backend

            engine = await connected_backend(settings, cluster.context)
        try:
            report = await collect_garbage(engine)
        except Exception as error:
            from ..backend import BackendError
            from ..errors import InfrastructureError

            if settings is None or not isinstance(error, BackendError):
                raise
            raise InfrastructureError(str(error)) from None  # the cluster's, exit 3
        finally:
            await engine.close()
        for resource in report.removed:
            run_id = resource.labels.get("sandbox-orch.run", "?")
            shown = resource.id if "/" in resource.id else resource.id[:12]  # Kind/name
            click.echo(f"removed {resource.kind} {shown} (run {run_id})")
        click.echo(f"{len(report.removed)} removed, {len(report.kept)} kept (owned by live runs)")

    asyncio.run(collect())


@main.command()
@backend_options
@exits_with_contract_codes
def doctor(
    cluster: BackendChoice,
) -> None:
    """Engine, OCI runtimes, images, and the isolation each shipped policy would get."""
    import asyncio

    settings = cluster.settings()
    if settings is not None:
        from ..backend.kubernetes.opening import doctor_lines

        for line in asyncio.run(doctor_lines(settings, cluster.context)):
            click.echo(line)
        return

    from ..backend import ImageMissing
    from ..backend.docker import runtimes_of
    from ..backend.engines import identify
    from ..doctor import (
        describe_volume_store,
        policy_isolations,
        protections,
        runtime_state,
        runtime_version,
    )
    from ..engine import docker_backend
    from ..images import available_images, image_ref

    async def check() -> None:
        backend = docker_backend()
        try:
            info = await backend.info()
            engine = identify(backend.client.version(), info)
            click.echo(f"engine: {engine.describe()}")
            runtimes = runtimes_of(info)
            for name in ("runc", "runsc"):
                click.echo(f"runtime {name}: {runtime_state(name, runtimes)}")
            # Run the registered runsc only when the engine is on this host.
            path = ((info.get("Runtimes") or {}).get("runsc") or {}).get("path")
            runsc = runtime_version(path) if backend.socket_path else None
            for line in protections(info, runtimes, runsc, engine.podman):
                click.echo(line)
            click.echo(f"artifact volumes: {await describe_volume_store(backend)}")
            for name in available_images():
                try:
                    image_id = await backend.image_id(image_ref(name))
                    click.echo(f"image {image_ref(name)}: built ({image_id[:19]})")
                except ImageMissing:
                    click.echo(
                        f"image {image_ref(name)}: not built (sandbox-orch images build {name})"
                    )
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
    from .. import review as reviewing
    from ..policy import load_policy
    from ..preparing import prepare

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
        reviewing.print_table(report, console)
    sys.exit(int(ExitCode.FAILED if report.failed else ExitCode.OK))
