"""CEL conditions: what is refused at validate time, and how they judge nodes at run time."""

import pytest

from sandbox_orch.backend.memory import Outcome
from sandbox_orch.conditions import ConditionError, NeedsState, compile_condition, evaluate
from sandbox_orch.errors import InputRefused
from sandbox_orch.status import NodeStatus, RunStatus

from .helpers import plan_of
from .test_scheduler import run

OK = NeedsState(success=True, failure=False, cancelled=False)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("1 +", "syntax error"),
        ("launch()", "unknown or disallowed function 'launch'"),
        ('nodes.a.outputs.s.matches("(a+)+$")', "disallowed method 'matches'"),
        ('matches("x", "y")', "disallowed function 'matches'"),
        ("env.HOME == ''", "unknown name 'env'"),
        ("nodes.stranger.status == 'x'", "not a need or an ancestor"),
        ('nodes["str" + "anger"].status == "x"', "literal node name"),
        ("x" * 5000, "limited to 4096 characters"),
    ],
)
def test_compile_refuses(source, message):
    with pytest.raises(ConditionError, match=message):
        compile_condition(source, {"a"})


def test_status_functions_are_detected():
    assert not compile_condition("nodes.a.exit_code == 0", {"a"}).status_aware
    handler = compile_condition("failure() || always()", set())
    assert handler.status_aware and handler.handles_failure
    assert not compile_condition("success() && cancelled()", set()).handles_failure


def test_evaluation_reads_nodes_including_dashed_names():
    condition = compile_condition(
        'nodes["lint-py"].outputs.count > 3 && nodes.a.exit_code == 0', {"lint-py", "a"}
    )
    view = {"lint-py": {"outputs": {"count": 4}}, "a": {"exit_code": 0}}
    assert evaluate(condition, view, OK) is True


def test_null_exit_code_of_a_node_that_never_ran():
    condition = compile_condition("nodes.a.exit_code == null", {"a"})
    assert evaluate(condition, {"a": {"exit_code": None}}, OK) is True


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("nodes.a.outputs.missing > 1", "no such member"),
        ("nodes.a.outputs", "must be true or false"),
        ("nodes.a.exit_code / 0 == 1", "divide by zero"),
        ("nodes.a.outputs.n > 'text'", "no matching overload"),
    ],
)
def test_evaluation_errors_are_condition_errors(source, message):
    condition = compile_condition(source, {"a"})
    with pytest.raises(ConditionError, match=message):
        evaluate(condition, {"a": {"outputs": {"n": 1}, "exit_code": 1}}, OK)


def test_when_may_see_ancestors_not_only_direct_needs():
    plan = plan_of(
        "version: 1\nname: x\nnodes:\n  a: {command: [x]}\n  b: {needs: [a], command: [x]}\n"
        "  c: {needs: [b], command: [x], when: nodes.a.exit_code == 0}\n"
    )
    assert plan.nodes["c"].visible == {"a", "b"}


BRANCHES = """
version: 1
name: branches
nodes:
  build:
    command: [x]
    outputs: {parse: {format: json}}
  deploy:
    needs: [build]
    command: [x]
    when: nodes.build.outputs.coverage > 80
  lowcov:
    needs: [build]
    command: [x]
    when: nodes.build.outputs.coverage <= 80
  on_fail:
    needs: [build]
    command: [x]
    when: failure()
  report:
    needs: [deploy, lowcov, on_fail]
    command: [x]
    when: always()
"""


def test_branch_on_parsed_output_runs_one_side_and_records_condition_results():
    _, records, _, _ = run(BRANCHES, {"build": Outcome(stdout=b'log line\n{"coverage": 91}\n')})
    states = {n: r.status for n, r in records.items()}
    assert states == {
        "build": NodeStatus.SUCCEEDED,
        "deploy": NodeStatus.SUCCEEDED,
        "lowcov": NodeStatus.SKIPPED,
        "on_fail": NodeStatus.SKIPPED,
        "report": NodeStatus.SUCCEEDED,
    }
    assert records["build"].last.outputs == {"coverage": 91}
    assert records["deploy"].condition_result is True
    assert records["lowcov"].condition_result is False
    assert records["lowcov"].skip_reason == "condition is false: nodes.build.outputs.coverage <= 80"
    assert records["on_fail"].condition_result is False


def test_failure_branch_runs_and_always_runs_even_under_fail_fast():
    scheduler, records, _, _ = run(BRANCHES, {"build": Outcome(exit_code=1, stdout=b"{}")})
    states = {n: r.status for n, r in records.items()}
    assert states["build"] == NodeStatus.FAILED
    assert states["deploy"] == NodeStatus.SKIPPED
    assert records["deploy"].skip_reason == "need 'build' failed"  # implicit success()
    assert states["on_fail"] == NodeStatus.SUCCEEDED
    assert states["report"] == NodeStatus.SUCCEEDED
    assert scheduler.run_status() == RunStatus.FAILED


def test_unparseable_output_fails_the_node_with_the_reason():
    _, records, _, _ = run(BRANCHES, {"build": Outcome(stdout=b"no json here\n")})
    assert records["build"].status == NodeStatus.FAILED
    assert records["build"].reason == "json parser: stdout is not JSON and has no JSON line"


def test_runtime_evaluation_error_makes_the_node_errored_and_the_run_goes_on():
    text = """
    version: 1
    name: x
    nodes:
      a: {command: [x], outputs: {parse: {format: json}}}
      b: {needs: [a], command: [x], when: nodes.a.outputs.nope == 1}
      c: {needs: [a], command: [x]}
    """
    scheduler, records, _, _ = run(text, {"a": Outcome(stdout=b"{}")}, fail_fast=False)
    assert records["b"].status == NodeStatus.ERRORED
    assert records["b"].reason.startswith("condition error: no such member")
    assert records["c"].status == NodeStatus.SUCCEEDED
    assert scheduler.run_status() == RunStatus.FAILED  # the workflow's fault, not the engine's


# --- the static cost limit and what is judged inline ---------------------------------------

TEN = "[1,2,3,4,5,6,7,8,9,10]"
HUNDRED = "[" + ",".join(["1"] * 100) + "]"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        # the red team's kind: nested .all() over literal lists (159 characters)
        (f"{TEN}.all(a, {TEN}.all(b, {TEN}.all(c, {TEN}.all(d, a+b+c+d > 0))))",
         "nests macros .* more than 2 deep"),
        (f"{TEN}.all(a, {TEN}.map(b, {TEN}.exists(c, true)).size() > 0)",
         "nests macros .* more than 2 deep"),
        (f"{HUNDRED}.all(a, {HUNDRED[:-1]},1].all(b, true) && true)",
         "iterates more than 10000 times over literal lists"),
        (f"{{1: 2, 3: 4}}.all(k, ({HUNDRED}).all(x, true)) && "  # 200 is fine
         f"[{','.join(['0'] * 1001)}].exists(b, {TEN}.all(c, false))",  # 10,010 is not
         "iterates more than 10000 times"),
        (" || ".join(["nodes.a.outputs.xs.exists(x, x == 1)"] * 9), "more than 8 macros"),
        ("(" * 25 + "true" + ")" * 25, "nested too deeply"),
        ("!" * 300 + "true", "nested too deeply"),
        (" + ".join(["1"] * 150) + " > 0", "nested too deeply"),
    ],
)  # fmt: skip
def test_static_cost_limit_refuses(source, message):
    with pytest.raises(ConditionError, match=message):
        compile_condition(source, {"a"})


def test_refusal_names_the_field_at_validate_time():
    with pytest.raises(InputRefused) as caught:
        plan_of(
            "version: 1\nname: x\nnodes:\n  a: {command: [x]}\n"
            f"  b:\n    needs: [a]\n    command: [x]\n    when: '{TEN}.all(a, {TEN}.all(b, "
            f"{TEN}.all(c, true)))'\n"
        )
    (problem,) = caught.value.problems
    assert str(problem).startswith("wf.yaml:8: nodes.b.when: nests macros")


@pytest.mark.parametrize(
    "source",
    [
        f"{TEN}.all(a, {TEN}.exists(b, a == b))",
        f"{HUNDRED}.all(a, {HUNDRED}.all(b, true))",  # exactly 10,000
        "nodes.a.outputs.files.exists(f, f.issues.exists(i, i.severity == 'high'))",
        "[1].map(x, x).map(x, x).map(x, x).filter(x, x > 0).all(x, true)",  # a chain is not nesting
        "(" * 19 + "true" + ")" * 19,
        " && ".join(["nodes.a.status == 'succeeded'"] * 100),
    ],
)
def test_static_cost_limit_allows_ordinary_conditions(source):
    compile_condition(source, {"a"})


@pytest.mark.parametrize(
    ("source", "inline"),
    [
        ("success()", True),
        ("nodes.a.status == 'succeeded' && nodes['a'].exit_code == 0", True),
        ("nodes.a.duration < 60.0 && nodes.a.attempts == 1 || failure()", True),
        ("nodes.a.outputs.coverage > 80", False),
        ("has(nodes.a.outputs)", False),
        ("nodes.a['out' + 'puts'].x == 1", False),  # an index that is not a node name
        ("size(nodes) == 1", False),  # the whole of `nodes`
        ("[1, 2].all(x, x > 0)", False),  # a macro, even over literals
    ],
)
def test_only_conditions_cheap_by_construction_are_inline(source, inline):
    assert compile_condition(source, {"a"}).inline is inline


def test_inline_condition_is_not_given_outputs_it_cannot_name():
    text = """
    version: 1
    name: x
    nodes:
      a: {command: [x], outputs: {parse: {format: json}}}
      b: {needs: [a], command: [x], when: "nodes.a.status == 'succeeded'"}
    """
    _, records, _, _ = run(text, {"a": Outcome(stdout=b'{"big": "' + b"x" * 100 + b'"}')})
    assert records["b"].status == NodeStatus.SUCCEEDED
    assert "outputs" not in records["a"].view(outputs=False)
