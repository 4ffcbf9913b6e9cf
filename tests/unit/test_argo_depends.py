"""`when` and needs as Argo's `depends`: each translation, each refusal (exact messages),
and the translation's exactness: for every status its needs can end in, a node runs on
Argo exactly when sandbox-orch's scheduler would start it."""

from __future__ import annotations

import itertools
import re

import pytest

from sandbox_orch.conditions import NeedsState, compile_condition, evaluate
from sandbox_orch.errors import InputRefused
from sandbox_orch.export.argo import argo_workflow, task_name
from sandbox_orch.export.argo_depends import (
    Const,
    Context,
    Need,
    Untranslatable,
    render,
    translate_condition,
)
from sandbox_orch.preparing import prepare

from .argo_cases import argo_settings
from .k8s_cases import ROOT

DEFAULT = ROOT / "policies" / "default.yaml"
SUBSET = "only node statuses, success(), failure(), always(), !, && and || translate to Argo"


def translated(when: str, tolerated: bool = False) -> str | bool:
    """The rendered Argo expression (or a folded constant) for a `when` over needs a, b
    (and c_d, an ancestor, as Argo task n-c-d-HASH)."""
    condition = compile_condition(when, {"a", "b", "c_d"})
    needs = (Need("a", tolerated), Need("b", False))
    context = Context(needs, {"a": "a", "b": "b", "c_d": task_name("c_d")})
    expr = translate_condition(condition.program.ast, context)
    return expr.value if isinstance(expr, Const) else render(expr)


CD = task_name("c_d")
TRANSLATIONS = [
    ("success()", "a.Succeeded && b.Succeeded"),
    ("failure()", "a.Failed || a.Errored || b.Failed || b.Errored"),
    ("always()", True),
    ("!always()", False),
    ("true && success()", "a.Succeeded && b.Succeeded"),
    ("false || always()", True),
    ("false", False),
    ("nodes.a.status == 'succeeded'", "a.Succeeded"),
    ("nodes.a.status != 'succeeded'", "!a.Succeeded"),
    ("'skipped' == nodes.a.status", "a.Skipped || a.Omitted"),
    ('nodes["a"].status == "errored"', "a.Errored"),
    ("nodes.c_d.status == 'succeeded'", f"{CD}.Succeeded"),
    ("nodes.a.status in ['failed', 'timed_out']", "a.Failed"),
    ("nodes.a.status in ['skipped', 'succeeded']", "a.Succeeded || a.Skipped || a.Omitted"),
    (
        "!(nodes.a.status == 'succeeded' && nodes.b.status == 'skipped')",
        "!(a.Succeeded && (b.Skipped || b.Omitted))",
    ),
    (
        "failure() && !(nodes.b.status != 'errored')",
        "(a.Failed || a.Errored || b.Failed || b.Errored) && b.Errored",
    ),
    ("(((success())))", "a.Succeeded && b.Succeeded"),
]


@pytest.mark.parametrize(("when", "expected"), TRANSLATIONS, ids=[t[0] for t in TRANSLATIONS])
def test_a_translation(when, expected):
    assert translated(when) == expected


def test_success_tolerates_a_need_allowed_to_fail():
    assert translated("success()", tolerated=True) == (
        "(a.Succeeded || a.Failed || a.Errored) && b.Succeeded"
    )


REFUSALS = [
    (
        "nodes.a.outputs.coverage > 80",
        "nodes.a.outputs: Argo cannot see a node's outputs (sandbox-orch's runner parses "
        "them from its stdout)",
    ),
    (
        "nodes.a.status == 'succeeded' || size(nodes.b.outputs) == 0",
        "nodes.b.outputs: Argo cannot see a node's outputs (sandbox-orch's runner parses "
        "them from its stdout)",
    ),
    (
        "nodes.a.exit_code == 0",
        "nodes.a.exit_code: Argo sets {{tasks.X.exitCode}} only for a task that ran, and a "
        "`when` naming an unset one waits forever; test nodes.a.status instead",
    ),
    (
        "nodes.a.duration < 10.0",
        "nodes.a.duration: Argo has no result a task's `depends` can test for it",
    ),
    (
        'nodes["b"].attempts == 1',
        "nodes.b.attempts: Argo has no result a task's `depends` can test for it",
    ),
    (
        "cancelled()",
        "cancelled(): a stopped Argo Workflow starts no further task, so no task can test for it",
    ),
    (
        "nodes.a.status == 'failed'",
        "nodes.a.status == 'failed': Argo reports a timed-out task as Failed too; test both "
        "(status in ['failed', 'timed_out']) or use failure()",
    ),
    (
        "nodes.a.status in ['timed_out', 'succeeded']",
        "nodes.a.status in ['timed_out', 'succeeded']: Argo reports a timed-out task as "
        "Failed too; test both (status in ['failed', 'timed_out']) or use failure()",
    ),
    (
        "nodes.a.status != 'running'",
        "nodes.a.status != 'running': a node a condition names has finished, so it is "
        "never 'running', and Argo has no such result",
    ),
    ("nodes.a.status == 'done'", "nodes.a.status == 'done': 'done' is not a node status"),
    (
        "nodes.a.status == 'succeeded' ? true : false",
        f"the conditional operator (a ? b : c): {SUBSET}",
    ),
    ("nodes.a.status.startsWith('succ')", f"a method call: {SUBSET}"),
    ("size(nodes) > 1", f"the operator >: {SUBSET}"),
    ("nodes.a.status < 'z'", f"the operator <: {SUBSET}"),
    (
        "nodes.a.status == nodes.b.status",
        f"a comparison: {SUBSET} (compare nodes.X.status with a string)",
    ),
    ("1 + 1 == 2", f"a comparison: {SUBSET} (compare nodes.X.status with a string)"),
    (
        "nodes.a.status + 'x' == 'y'",
        f"a comparison: {SUBSET} (compare nodes.X.status with a string)",
    ),
    ("size('x') == 1", f"a comparison: {SUBSET} (compare nodes.X.status with a string)"),
    ("int(true)", f"int(): {SUBSET}"),
    ("has(nodes.a)", f"has(): {SUBSET}"),
    ("nodes.a == nodes.b", f"nodes.a as a whole: {SUBSET}"),
    ("nodes.a.status == 1", "the literal 1: a status is compared with a string literal"),
    ("nodes.a.status in nodes", "a name: `in` takes a list of status strings"),
    ("-1 == 1", f"a comparison: {SUBSET} (compare nodes.X.status with a string)"),
    ("!!(-(1) == 1)", f"a comparison: {SUBSET} (compare nodes.X.status with a string)"),
    ("[true][0]", f"indexing: {SUBSET}"),
]


@pytest.mark.parametrize(("when", "message"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_a_refusal_says_why(when, message):
    with pytest.raises(Untranslatable) as refused:
        translated(when)
    assert str(refused.value) == message


def test_a_refused_when_is_located_in_the_file(tmp_path):
    workflow = tmp_path / "w.yaml"
    workflow.write_text(
        "version: 1\nname: w\nfail_fast: false\nnodes:\n"
        "  a: {command: 'true'}\n"
        "  b:\n    needs: [a]\n    when: nodes.a.exit_code == 3\n    command: 'true'\n"
    )
    prepared = prepare(workflow, DEFAULT)
    with pytest.raises(InputRefused) as refused:
        argo_workflow(prepared.plan, prepared.sandboxes, argo_settings())
    assert str(refused.value) == (
        f"{workflow}:8: nodes.b.when: nodes.a.exit_code: Argo sets {{{{tasks.X.exitCode}}}} "
        "only for a task that ran, and a `when` naming an unset one waits forever; test "
        "nodes.a.status instead"
    )


# -- exactness: Argo runs a node exactly when sandbox-orch would -------------------------

STATUSES = ("succeeded", "failed", "timed_out", "errored", "skipped")
UNSUCCESSFUL = {"failed", "timed_out", "errored"}
# What Argo reports for each; a skipped node is Skipped (`when`) or Omitted (`depends`).
ARGO = {
    "succeeded": ("Succeeded",),
    "failed": ("Failed",),
    "timed_out": ("Failed",),
    "errored": ("Errored",),
    "skipped": ("Skipped", "Omitted"),
}
CONDITIONS = [
    None,
    "success()",
    "failure()",
    "always()",
    "false",
    "nodes.a.status == 'succeeded'",
    "nodes.a.status != 'succeeded'",
    "nodes.b.status == 'skipped' || failure()",
    "nodes.root.status == 'succeeded'",
    "always() && nodes.a.status in ['failed', 'timed_out']",
    "!success() && !(nodes.b.status == 'errored')",
    "nodes.a.status in ['errored', 'skipped'] || nodes.b.status == 'succeeded'",
]


def scheduler_starts(when: str | None, statuses: dict[str, str], tolerated: bool) -> bool:
    """sandbox-orch's decision (scheduler._judge, without a fail_fast halt)."""
    blocking = any(
        not (s == "succeeded" or (s in UNSUCCESSFUL and (tolerated and n == "a")))
        for n, s in statuses.items()
        if n != "root"
    )
    if when is None:
        return not blocking
    condition = compile_condition(when, {"a", "b", "root"})
    if not condition.status_aware and blocking:
        return False
    state = NeedsState(
        success=not blocking,
        failure=any(statuses[n] in UNSUCCESSFUL for n in ("a", "b")),
        cancelled=False,
    )
    nodes = {n: {"status": s, "exit_code": None} for n, s in statuses.items()}
    return evaluate(condition, nodes, state)


def argo_starts(task: dict, results: dict[str, str]) -> bool:
    """Argo's decision: `depends` over the results, then `when` (govaluate)."""
    if task.get("when") == "false":
        return False
    depends = task.get("depends")
    if depends is None:
        return True
    words = re.sub(
        r"([a-z][-a-z0-9]*)\.([A-Z][a-z]+)",
        lambda m: str(results[m.group(1)] == m.group(2)),
        depends,
    )
    python = words.replace("&&", " and ").replace("||", " or ").replace("!", " not ")
    return bool(eval(python, {"__builtins__": {}}))  # our own rendering: True/False/and/or


@pytest.mark.parametrize("tolerated", [False, True], ids=["strict", "allow_failure"])
@pytest.mark.parametrize("when", CONDITIONS, ids=str)
def test_argo_starts_a_node_exactly_when_sandbox_orch_would(when, tolerated, tmp_path):
    needs = "[{node: a, allow_failure: true}, b]" if tolerated else "[a, b]"
    condition = f"    when: {when!r}\n" if when else ""
    workflow = tmp_path / "w.yaml"
    workflow.write_text(
        "version: 1\nname: w\nfail_fast: false\nnodes:\n"
        "  root: {command: 'true'}\n"
        "  a: {needs: [root], command: 'true'}\n"
        "  b: {needs: [root], command: 'true'}\n"
        f"  c:\n    needs: {needs}\n{condition}    command: 'true'\n"
    )
    prepared = prepare(workflow, DEFAULT)
    document = argo_workflow(prepared.plan, prepared.sandboxes, argo_settings())
    (task,) = [t for t in document["spec"]["templates"][0]["dag"]["tasks"] if t["name"] == "c"]
    checked = 0
    for a, b in itertools.product(STATUSES, repeat=2):
        statuses = {"root": "succeeded", "a": a, "b": b}
        expected = scheduler_starts(when, statuses, tolerated)
        for ra, rb in itertools.product(ARGO[a], ARGO[b]):
            results = {"root": "Succeeded", "a": ra, "b": rb}
            assert argo_starts(task, results) == expected, (statuses, results, task)
            checked += 1
    assert checked == 36


def test_the_exactness_check_fails_for_argos_own_dependencies_rule():
    """`dependencies: [a]` means a.Succeeded || a.Skipped || ...: it runs a node whose
    need was skipped, which sandbox-orch skips; the check above would catch it."""
    task = {"depends": "(a.Succeeded || a.Skipped || a.Daemoned) && b.Succeeded"}
    results = {"a": "Skipped", "b": "Succeeded"}
    statuses = {"root": "succeeded", "a": "skipped", "b": "succeeded"}
    assert argo_starts(task, results) != scheduler_starts(None, statuses, tolerated=False)


def test_a_repeated_operand_is_written_once():
    assert translated("success() && nodes.a.status == 'succeeded'") == "a.Succeeded && b.Succeeded"
    assert translated("nodes.b.status == 'skipped' || nodes.b.status == 'skipped'") == (
        "b.Skipped || b.Omitted"
    )
