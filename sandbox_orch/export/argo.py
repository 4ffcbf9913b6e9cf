"""An admitted workflow as an Argo Workflow (argoproj.io/v1alpha1): one DAG template, one
container template per node. Pure: no client, no network.

Each node's template carries the pod of the node's Job as the Kubernetes backend builds
it (backend/kubernetes/job.py: same image by digest, command under prlimit, securityContext,
resources, memory emptyDirs, runtime class, labels): the fields an Argo template has are
set on it (container, securityContext, volumes, metadata, automountServiceAccountToken,
activeDeadlineSeconds), the rest of the pod spec goes into its `podSpecPatch`. Ordering and
conditions become `depends` (argo_depends.py). What only sandbox-orch's runner can do is
refused with the reason (argo_refusals.py): the export never drops a request silently.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, replace
from typing import Any

from ..backend.kubernetes import ClusterSettings, ManifestError, NodeAttempt, node_job
from ..backend.kubernetes.job import CONTAINER
from ..backend.kubernetes.names import job_name, legal_name, secret_name
from ..errors import InputRefused
from ..execution import OWNER_LABEL, RUN_LABEL
from ..planning import Plan, PlannedNode
from ..sandbox import Sandbox
from .argo_depends import (
    Const,
    Context,
    Expr,
    Need,
    Untranslatable,
    all_of,
    finished,
    render,
    success,
    tasks_of,
    translate_condition,
)
from .argo_refusals import node_problem, workflow_problems

API_VERSION = "argoproj.io/v1alpha1"
DAG_TEMPLATE = "dag"
MAIN = "main"  # Argo runs a container template's container under this name
EXPORTED_LABEL = "sandbox-orch.exported"  # "argo": not a run's (`gc` selects by RUN_LABEL)
WORKFLOW_ANNOTATION = "sandbox-orch.workflow"
SECRETS_ANNOTATION = "sandbox-orch.secrets"  # the per-node Secrets the operator creates
DEFAULT_EXECUTOR_ACCOUNT = "sandbox-orch-executor"
# Pod fields a template sets itself; every other field of the Job's pod is patched in.
TEMPLATE_POD_FIELDS = ("containers", "securityContext", "volumes", "automountServiceAccountToken")
# Used only to build the pods (a Job names its namespace); not printed unless asked for.
BUILD_NAMESPACE = "sandbox-orch"
# Argo task names: letters, digits, `-`; no leading digit when `depends` is used.
TASK_NAME = re.compile(r"^[a-z][-a-z0-9]{0,62}$")


@dataclass(frozen=True)
class ArgoSettings:
    cluster: ClusterSettings  # runtime classes and pinned images; namespace "" = none
    # Argo requires one when pods mount no token: its token goes to Argo's own init and
    # wait containers only, never to the node's.
    executor_service_account: str = DEFAULT_EXECUTOR_ACCOUNT
    keep_going: bool = False  # as `run --keep-going`: no fail_fast halt


def argo_workflow(
    plan: Plan, sandboxes: dict[str, Sandbox], settings: ArgoSettings
) -> dict[str, Any]:
    """The Workflow; InputRefused (exit 2) for what Argo cannot run as sandbox-orch would,
    ManifestError for what the cluster settings do not map."""
    if not legal_name(settings.executor_service_account):
        account = settings.executor_service_account
        raise ManifestError(f"executor service account {account!r} is not a legal name")
    problems = workflow_problems(plan, settings.keep_going)
    for node in plan.nodes.values():
        problem = node_problem(plan, node, sandboxes[node.name])
        if problem is not None:
            problems.append(problem)
    tasks = task_names(plan)
    dag: list[dict[str, Any]] = []
    for node in plan.nodes.values():
        try:
            dag.append(_task(plan, node, tasks))
        except Untranslatable as why:
            problems.append(plan.document.problem((*node.loc, "when"), str(why)))
    if problems:
        raise InputRefused(problems)
    token = export_token(plan.workflow.name)
    templates = [
        _template(node, sandboxes[node.name], tasks[node.name], token, settings)
        for node in plan.nodes.values()
    ]
    fail_fast = plan.workflow.fail_fast and not settings.keep_going
    return {
        "apiVersion": API_VERSION,
        "kind": "Workflow",
        "metadata": _metadata(plan, sandboxes, token, settings),
        "spec": _spec(plan, settings, fail_fast, dag, templates),
    }


# -- names ------------------------------------------------------------------------------


def export_token(name: str) -> str:
    """The workflow's name as a legal part of Kubernetes names (the Workflow's
    generateName, the per-node Secrets' names): itself when it is one, else its legal
    part and a hash of the whole."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:20].strip("-")
    if slug == name:
        return slug
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{slug}-{digest}" if slug else f"w-{digest}"


def task_name(node: str) -> str:
    """A node's Argo task name: itself when Argo takes it in `depends` (no `_`, no leading
    digit), else `n-`, its legal part and a hash of it (names stay unique)."""
    if TASK_NAME.match(node):
        return node
    digest = hashlib.sha256(node.encode()).hexdigest()[:8]
    return f"n-{re.sub(r'[^a-z0-9-]', '-', node)}-{digest}"


def task_names(plan: Plan) -> dict[str, str]:
    names = {name: task_name(name) for name in plan.nodes}
    if len(set(names.values())) != len(names):  # a hash collision: never seen
        raise ValueError("two nodes map to one Argo task name")
    return names


# -- the DAG ----------------------------------------------------------------------------


def run_condition(plan: Plan, node: PlannedNode, tasks: dict[str, str]) -> Expr:
    """When sandbox-orch starts this node (besides fail_fast), over Argo task results."""
    needs = tuple(
        Need(tasks[e.source], e.allow_failure or plan.nodes[e.source].continue_on_failure)
        for e in node.needs
    )
    condition = node.condition
    if condition is None:
        return success(needs)
    context = Context(needs, {name: tasks[name] for name in node.visible})
    expr = translate_condition(condition.program.ast, context)
    # A `when` that calls no status function means `success() && (when)` (CONTRACT 5).
    return expr if condition.status_aware else all_of([success(needs), expr])


def _task(plan: Plan, node: PlannedNode, tasks: dict[str, str]) -> dict[str, Any]:
    name = tasks[node.name]
    task: dict[str, Any] = {"name": name, "template": f"node-{name}"}
    expr = run_condition(plan, node, tasks)
    # Argo waits only for the tasks its `depends` names: name every need, as finished.
    named = tasks_of(expr)
    waited = [finished(tasks[e.source]) for e in node.needs if tasks[e.source] not in named]
    gate = all_of([expr, *waited]) if not isinstance(expr, Const) else all_of(waited)
    if not isinstance(gate, Const):
        task["depends"] = render(gate)
    if isinstance(expr, Const) and not expr.value:
        task["when"] = "false"  # never runs: skipped, as sandbox-orch would
    return task


# -- templates --------------------------------------------------------------------------


def _template(
    node: PlannedNode, sandbox: Sandbox, task: str, token: str, settings: ArgoSettings
) -> dict[str, Any]:
    cluster = replace(settings.cluster, namespace=settings.cluster.namespace or BUILD_NAMESPACE)
    job = node_job(node, sandbox, NodeAttempt(token, "argo", 1, None), cluster)
    pod_template = job["spec"]["template"]
    pod = pod_template["spec"]
    if "initContainers" in pod:  # only inputs and mounts have one: refused before
        raise ValueError(f"node {node.name!r} needs a delivery the export cannot make")
    (container,) = pod["containers"]
    assert container["name"] == CONTAINER
    labels = {k: v for k, v in pod_template["metadata"]["labels"].items() if k != RUN_LABEL}
    annotations = {
        k: v
        for k, v in pod_template["metadata"]["annotations"].items()
        if k not in (RUN_LABEL, OWNER_LABEL)
    }
    patch = {k: v for k, v in pod.items() if k not in TEMPLATE_POD_FIELDS}
    return {
        "name": f"node-{task}",
        "metadata": {"labels": {**labels, EXPORTED_LABEL: "argo"}, "annotations": annotations},
        "container": {**container, "name": MAIN},
        "securityContext": pod["securityContext"],
        "volumes": pod["volumes"],
        "automountServiceAccountToken": pod["automountServiceAccountToken"],
        "executor": {"serviceAccountName": settings.executor_service_account},
        # Counted from the pod's start (its image pull included), as Argo does. An
        # IntOrString that Argo's published schema types as a string.
        "activeDeadlineSeconds": str(math.ceil(sandbox.timeout)),
        "podSpecPatch": json.dumps(patch, sort_keys=True, separators=(",", ":")),
    }


def _metadata(
    plan: Plan, sandboxes: dict[str, Sandbox], token: str, settings: ArgoSettings
) -> dict[str, Any]:
    annotations = {WORKFLOW_ANNOTATION: plan.workflow.name}
    secrets = {
        secret_name(job_name(token, name, 1)): list(sandbox.secrets)
        for name, sandbox in sandboxes.items()
        if sandbox.secrets
    }
    if secrets:
        annotations[SECRETS_ANNOTATION] = json.dumps(secrets, sort_keys=True)
    metadata: dict[str, Any] = {
        "generateName": f"{token}-",
        "labels": {EXPORTED_LABEL: "argo"},
        "annotations": annotations,
    }
    if settings.cluster.namespace:
        metadata["namespace"] = settings.cluster.namespace
    return metadata


def _spec(
    plan: Plan,
    settings: ArgoSettings,
    fail_fast: bool,
    dag: list[dict[str, Any]],
    templates: list[dict[str, Any]],
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "entrypoint": DAG_TEMPLATE,
        "automountServiceAccountToken": False,
        "executor": {"serviceAccountName": settings.executor_service_account},
        "templates": [
            {"name": DAG_TEMPLATE, "dag": {"failFast": fail_fast, "tasks": dag}},
            *templates,
        ],
    }
    if plan.workflow.timeout is not None:
        spec["activeDeadlineSeconds"] = math.ceil(plan.workflow.timeout)
    return spec
