"""What an Argo Workflow cannot do as sandbox-orch's runner does, refused with the reason,
located in the workflow file (never dropped silently). Pure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..backend.kubernetes.env import has_egress
from ..errors import Problem
from ..planning import Plan, PlannedNode
from ..sandbox import Sandbox

NodeCheck = Callable[[PlannedNode, Sandbox], tuple[tuple[Any, ...], str] | None]


def _mounts(node: PlannedNode, sandbox: Sandbox) -> tuple[tuple[Any, ...], str] | None:
    if sandbox.mounts:
        return ("mounts",), (
            "a cluster has no host directory to mount, and an Argo Workflow has no "
            "sandbox-orch runner to copy one in"
        )
    return None


def _inputs(node: PlannedNode, sandbox: Sandbox) -> tuple[tuple[Any, ...], str] | None:
    if node.inputs:
        return ("inputs",), (
            "artifacts between nodes are not exported: Argo's need an artifact repository "
            "and do not keep sandbox-orch's copy rules (no links, size limit, read-only)"
        )
    return None


def _artifacts(node: PlannedNode, sandbox: Sandbox) -> tuple[tuple[Any, ...], str] | None:
    if node.artifacts:
        return ("outputs", "artifacts"), (
            "artifacts are not exported: nothing would copy them out of the pod (Argo's "
            "need an artifact repository and do not keep sandbox-orch's copy rules)"
        )
    return None


def _egress(node: PlannedNode, sandbox: Sandbox) -> tuple[tuple[Any, ...], str] | None:
    if not has_egress(sandbox):
        return None
    field = "setup" if sandbox.setup_argv else "secrets" if sandbox.brokered else "network"
    return (field,), (
        "egress goes through sandbox-orch's egress proxy, which an Argo Workflow does not "
        "run (a setup phase and brokered secrets need it too)"
    )


def _parse(node: PlannedNode, sandbox: Sandbox) -> tuple[tuple[Any, ...], str] | None:
    if node.parse.format != "none":
        return ("outputs", "parse"), (
            f"Argo does not parse a node's output ({node.parse.format}): a node whose "
            "output fails its parser fails under sandbox-orch but would succeed on Argo"
        )
    return None


def _prompt(node: PlannedNode, sandbox: Sandbox) -> tuple[tuple[Any, ...], str] | None:
    if node.prompt is not None:
        return ("prompt",), (
            "a prompt's ${{ ... }} is rendered by sandbox-orch's runner from other "
            "nodes' outputs, which Argo cannot see"
        )
    return None


def _retries(node: PlannedNode, sandbox: Sandbox) -> tuple[tuple[Any, ...], str] | None:
    if node.retries is not None:
        return ("retries",), (
            "Argo's retryStrategy cannot retry on sandbox-orch's reasons (it cannot tell "
            "a timeout or an OOM kill from a failure) nor grow memory per attempt"
        )
    return None


def _start_delay(node: PlannedNode, sandbox: Sandbox) -> tuple[tuple[Any, ...], str] | None:
    if node.request.start_delay is not None:
        return ("start_delay",), "Argo has no per-task start delay"
    return None


NODE_REFUSALS: tuple[NodeCheck, ...] = (
    _mounts,
    _inputs,
    _artifacts,
    _egress,
    _parse,
    _prompt,
    _retries,
    _start_delay,
)


def node_problem(plan: Plan, node: PlannedNode, sandbox: Sandbox) -> Problem | None:
    """The first reason this node cannot be exported, located in the file."""
    for check in NODE_REFUSALS:
        found = check(node, sandbox)
        if found is None:
            continue
        field, message = found
        loc: tuple[Any, ...] = (*node.loc, *field)
        if field == ("retries",) and node.request.retries is None:
            loc = ("defaults", "retries")
        return plan.document.problem(loc, message)
    return None


def workflow_problems(plan: Plan, keep_going: bool) -> list[Problem]:
    problems = []
    workflow = plan.workflow
    if workflow.budget is not None:
        message = "a budget counts agents' spending, which only sandbox-orch's runner sees"
        problems.append(plan.document.problem(("budget",), message))
    if workflow.fail_fast and not keep_going:
        why = _fail_fast_difference(plan)
        if why is not None:
            message = (
                f"Argo's failFast starts no task after any failure: {why}; set "
                "fail_fast: false or export with --keep-going (each branch then runs to "
                "its end)"
            )
            problems.append(plan.document.problem(("fail_fast",), message))
    return problems


def _fail_fast_difference(plan: Plan) -> str | None:
    """Where Argo's failFast would differ from sandbox-orch's fail_fast (which still runs
    failure()/always() handlers, and is not set off by a node that continues on failure)."""
    for node in plan.nodes.values():
        if node.condition is not None and node.condition.handles_failure:
            return f"not even the handler {node.name!r} (failure() or always())"
        if node.continue_on_failure:
            return f"not even after {node.name!r}, which continues on failure"
    return None
