"""Prompts from earlier results (`${{ ... }}` in an agent's prompt): the syntax, what
validate refuses, the one rule from a value to text, the size cap, and launches on the
in-memory backend (the value in the agent's argv, redacted; a missing output fails the
node before anything is created)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import textwrap
import time
from pathlib import Path

import pytest

from sandbox_orch import redaction
from sandbox_orch.admission import admit
from sandbox_orch.agents.prompts import (
    Expression,
    PromptError,
    as_text,
    compile_template,
    escape,
    render,
    split,
)
from sandbox_orch.backend.memory import MemoryBackend, Outcome
from sandbox_orch.bounded.evaluator import Evaluator
from sandbox_orch.bounded.limits import MAX_PROMPT_EXPRESSIONS
from sandbox_orch.errors import InputRefused
from sandbox_orch.execution import NODE_LABEL, NodeRunner
from sandbox_orch.plan_render import render_json, render_text
from sandbox_orch.policy import load_policy
from sandbox_orch.scheduler import Scheduler
from sandbox_orch.single import SingleRequest, single_plan
from sandbox_orch.status import NodeStatus, RunStatus

from .helpers import default_policy, plan_of, run_on_memory

# -- the syntax ---------------------------------------------------------------------------


def test_plain_text_is_one_literal_part():
    assert split("Review the diff") == ["Review the diff"]


def test_expressions_are_split_from_the_text_around_them():
    parts = split("Plan:\n${{ nodes.plan.outputs.result }} and ${{nodes.b.status}}.")
    assert parts == [
        "Plan:\n",
        Expression("nodes.plan.outputs.result", 1),
        " and ",
        Expression("nodes.b.status", 2),
        ".",
    ]


def test_a_doubled_dollar_writes_a_literal_opening():
    assert split("use $${{ secrets.TOKEN }} in CI") == ["use ${{ secrets.TOKEN }} in CI"]
    assert split("$$${{ 'x' }}") == ["$${{ 'x' }}"]  # only `$${{` is an escape


@pytest.mark.parametrize(
    ("source", "expression"),
    [
        ('${{ "}}" + nodes.a.status }}', '"}}" + nodes.a.status'),
        ("${{ '}}' }}", "'}}'"),
        ('${{ """a }} b""" }}', '"""a }} b"""'),
        ('${{ "\\"}}" }}', '"\\"}}"'),
        ('${{ r"\\" + "}}" }}', 'r"\\" + "}}"'),  # a raw string ends at its quote
        ('${{ {"a": {"b": 1}} }}', '{"a": {"b": 1}}'),  # map literals close their braces
    ],
)
def test_an_expression_ends_at_the_first_closing_outside_literals(source, expression):
    assert split(source) == [Expression(expression, 1)]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("Plan: ${{ nodes.a.outputs.result", "at character 7 is not closed with `}}`"),
        ("${{ '}} }}", "not closed"),  # the literal swallows both closings
        ("a ${{  }} b", r"`\$\{\{ \}\}` at character 3 is empty"),
        ("${{ 1 }}" * (MAX_PROMPT_EXPRESSIONS + 1), f"more than {MAX_PROMPT_EXPRESSIONS}"),
    ],
)
def test_malformed_templates_are_refused(source, message):
    with pytest.raises(PromptError, match=message):
        split(source)


def test_escape_makes_any_text_render_as_itself():
    text = "fix ${{ secrets.X }} and $${{ y }}"
    assert split(escape(text)) == [text]


# -- validate ----------------------------------------------------------------------------

AGENTS = """
version: 1
name: handoff
nodes:
  plan: {runtime: claude, prompt: "Write a plan", secrets: [], network: {egress: []}}
  other: {runtime: claude, prompt: "Unrelated", secrets: [], network: {egress: []}}
  build:
    runtime: codex
    needs: [plan]
    command: [--model, gpt-mock]
    secrets: []
    network: {egress: []}
    prompt: %s
"""


def plan_with(prompt: str):
    return plan_of(AGENTS % json.dumps(prompt))


def refusals(prompt: str) -> list[str]:
    with pytest.raises(InputRefused) as caught:
        plan_with(prompt)
    return [str(p) for p in caught.value.problems]


def test_the_template_stays_in_argv_until_launch_and_plan_shows_it():
    plan = plan_with("Implement: ${{ nodes.plan.outputs.result }}")
    build = plan.nodes["build"]
    assert build.prompt is not None and build.prompt.references == {"plan"}
    assert build.argv[-1] == "Implement: ${{ nodes.plan.outputs.result }}"
    assert build.argv[build.prompt.slot] == build.argv[-1]  # codex: the last argument
    assert "--model" in build.argv  # its extra arguments are kept, before the prompt
    policy = dataclasses.replace(default_policy(), runtimes=("claude", "codex"))
    sandboxes = admit(plan, policy, environ={})
    text = render_text(plan, sandboxes)
    assert "    prompt: Implement: ${{ nodes.plan.outputs.result }}" in text
    assert json.loads(render_json(plan, sandboxes))["nodes"]["build"]["argv"][-1] == (
        "Implement: ${{ nodes.plan.outputs.result }}"
    )


def test_a_claude_template_takes_the_place_of_p():
    text = AGENTS.replace("runtime: codex", "runtime: claude") % '"Go: ${{ nodes.plan.status }}"'
    build = plan_of(text).nodes["build"]
    assert build.prompt is not None and build.prompt.slot == len(build.argv) - 1
    assert build.argv[1] == "-p" and build.argv[-2:] == ("--", "Go: ${{ nodes.plan.status }}")


def test_a_prompt_without_expressions_is_launched_as_written_escapes_undone():
    build = plan_with("Fix $${{ secrets.TOKEN }} in ci.yml").nodes["build"]
    assert build.prompt is None
    assert build.argv[-1] == "Fix ${{ secrets.TOKEN }} in ci.yml"


def test_ancestors_may_be_read_like_in_when():
    text = AGENTS % '"${{ nodes.plan.status }}"'
    text += '  last: {runtime: claude, needs: [build], prompt: "${{ nodes.plan.outputs }}"}\n'
    assert plan_of(text).nodes["last"].prompt.references == {"plan"}


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        (
            "${{ nodes.other.outputs.result }}",
            "`${{ nodes.other.outputs.result }}`: refers to node 'other', "
            "which is not a need or an ancestor",
        ),
        ("${{ nodes.nobody.status }}", "refers to node 'nobody'"),
        ("${{ nodes.plan.outputs.result + }}", "syntax error"),
        ("${{ env.HOME }}", "unknown name 'env'"),
        ("${{ failure() ? 'a' : 'b' }}", "are for `when`, not for prompts"),
        ("${{ nodes.plan.outputs.s.matches('(a+)+$') }}", "disallowed method 'matches'"),
        (
            "${{ [1].all(a, [2].all(b, [3].all(c, true))) }}",
            "nests macros (all, exists, map, ...) more than 2 deep",
        ),
        ("${{ " + "x" * 5000 + " }}", "limited to 4096 characters"),
        ("Plan: ${{ nodes.plan.outputs.result", "is not closed"),
    ],
)
def test_validate_refuses_with_the_prompts_line(prompt, message):
    (line,) = refusals(prompt)
    assert line.startswith("wf.yaml:13: nodes.build.prompt: ")
    assert message in line


def test_the_prompts_text_alone_over_the_policy_limit_is_refused():
    policy = dataclasses.replace(default_policy(), runtimes=("claude", "codex"))
    policy = dataclasses.replace(policy, limits=dataclasses.replace(policy.limits, prompt=100))
    plan = plan_with("x" * 101 + "${{ nodes.plan.status }}")
    with pytest.raises(InputRefused) as caught:
        admit(plan, policy, environ={})
    (problem,) = caught.value.problems
    assert str(problem) == (
        "wf.yaml:13: nodes.build.prompt: node 'build': the prompt's text is 101 bytes, "
        "above the policy's prompt limit (100 bytes)"
    )
    assert admit(plan_with("x" * 100), policy, environ={})["build"].prompt_limit == 100


def test_the_policys_prompt_limit_is_one_argument_at_most(tmp_path: Path):
    path = tmp_path / "p.yaml"
    # Above 120k: tests/corpus/refused/policy/limits-prompt-above-120k.yaml
    path.write_text("version: 1\nname: p\nlimits: {prompt: 8k}\n")
    assert load_policy(path).limits.prompt == 8192
    assert default_policy().limits.prompt == 64 * 1024


def test_single_takes_its_prompt_as_typed():
    request = SingleRequest("claude", Path("/tmp/ws"), prompt="fix ${{ secrets.X }} usage")
    node = single_plan(request).nodes["single"]
    assert node.prompt is None and node.argv[-1] == "fix ${{ secrets.X }} usage"


# -- rendering: the one rule from a value to text ----------------------------------------

VIEWS = {
    "plan": {
        "status": "succeeded",
        "outputs": {
            "result": "step 1\nstep 2",
            "n": 3,
            "ratio": 2.5,
            "ok": True,
            "items": ["a", 1, None, {"k": False}],
            "none": None,
        },
    }
}


@pytest.mark.parametrize(
    ("expression", "text"),
    [
        ("nodes.plan.outputs.result", "step 1\nstep 2"),
        ("nodes.plan.outputs.n", "3"),
        ("nodes.plan.outputs.ratio", "2.5"),
        ("nodes.plan.outputs.ok", "true"),
        ("nodes.plan.outputs.items", '["a", 1, null, {"k": false}]'),
        ("nodes.plan.outputs.n > 2", "true"),
        ('"<" + nodes.plan.status + ">"', "<succeeded>"),
        ('has(nodes.plan.outputs.missing) ? "x" : "no plan"', "no plan"),
    ],
)
def test_values_become_text_by_one_rule(expression, text):
    assert render("${{ " + expression + " }}", VIEWS, 1000) == text


def test_text_around_expressions_is_kept():
    source = "Implement:\n${{ nodes.plan.outputs.result }}\n($${{ literal }})"
    assert render(source, VIEWS, 1000) == "Implement:\nstep 1\nstep 2\n(${{ literal }})"


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("nodes.plan.outputs.none", "gives null, not text"),
        ("type(nodes.plan.outputs.n)", "which has no text form"),
        ("nodes.plan.outputs.missing", "no such member in mapping: 'missing'"),
        ("nodes.plan.outputs.n / 0", "divide by zero"),
    ],
)
def test_values_without_a_text_form_fail(expression, message):
    with pytest.raises(PromptError, match=message):
        render("${{ " + expression + " }}", VIEWS, 1000)


def test_a_need_that_did_not_succeed_is_named_when_its_field_is_missing():
    views = {"plan": {"status": "skipped", "outputs": {}}}
    with pytest.raises(PromptError) as caught:
        render("${{ nodes.plan.outputs.result }}", views, 1000)
    assert str(caught.value) == (
        "`${{ nodes.plan.outputs.result }}`: no such member in mapping: 'result' "
        "(node 'plan' skipped)"
    )


def test_over_the_limit_fails_and_is_never_cut():
    views = {"plan": {"status": "succeeded", "outputs": {"result": "é" * 50}}}  # 100 bytes
    assert render("${{ nodes.plan.outputs.result }}", views, 100) == "é" * 50
    with pytest.raises(PromptError, match=r"larger than the policy's prompt limit \(99 bytes\)"):
        render("${{ nodes.plan.outputs.result }}", views, 99)
    with pytest.raises(PromptError, match="prompt limit"):
        render("!${{ nodes.plan.outputs.result }}", views, 100)  # the text counts too


def test_a_nul_character_can_never_be_an_argument():
    views = {"plan": {"status": "succeeded", "outputs": {"result": "a\x00b"}}}
    with pytest.raises(PromptError, match="NUL character"):
        render("${{ nodes.plan.outputs.result }}", views, 1000)


def test_non_finite_numbers_in_a_map_are_not_json():
    with pytest.raises(ValueError, match="not JSON"):
        as_text({"x": float("nan")})


def test_compiled_template_knows_what_it_reads():
    template = compile_template("${{ size(nodes) }} ${{ nodes.a.status }}", 0, {"a", "b"})
    assert template.whole_nodes and template.reads({"a", "b"}) == {"a", "b"}
    narrow = compile_template("${{ nodes.a.status }}", 0, {"a", "b"})
    assert narrow.reads({"a", "b"}) == {"a"}


# -- launches on the in-memory backend ---------------------------------------------------

POLICY = dataclasses.replace(default_policy(), runtimes=("python", "claude", "codex"))
AGENT = "secrets: [], network: {egress: []}"


def launch(text: str, outcomes: dict[str, Outcome], policy=POLICY, seconds: float = 10):
    """Run on the memory backend; returns the records, each node's argv as created, the
    scheduler."""
    plan = plan_of(textwrap.dedent(text))
    sandboxes = admit(plan, policy, environ={})
    argvs: dict[str, tuple[str, ...]] = {}

    def script(spec):
        argvs[spec.labels[NODE_LABEL]] = spec.argv
        return outcomes.get(spec.labels[NODE_LABEL], Outcome())

    scheduler, records, _, _ = run_on_memory(
        plan, sandboxes, script, evaluator=Evaluator(seconds=seconds)
    )
    return records, argvs, scheduler


def result_line(text: str) -> bytes:
    """A Claude Code stream whose final answer is `text`."""
    event = {"type": "result", "subtype": "success", "is_error": False, "num_turns": 1}
    return json.dumps({**event, "result": text}).encode() + b"\n"


DONE = Outcome(stdout=result_line("done"))
HANDOFF = f"""
version: 1
name: handoff
fail_fast: false
nodes:
  plan: {{runtime: claude, prompt: "Write a plan", {AGENT}}}
  build:
    runtime: claude
    needs: [plan]
    prompt: "Implement this plan:\\n${{{{ nodes.plan.outputs.result }}}}"
    secrets: []
    network: {{egress: []}}
"""


def test_the_next_agent_gets_the_answer_of_the_first_in_its_argv():
    answers = {"plan": Outcome(stdout=result_line("1. add\n2. test")), "build": DONE}
    records, argvs, _ = launch(HANDOFF, answers)
    assert records["build"].status == NodeStatus.SUCCEEDED
    assert argvs["build"][-2:] == ("--", "Implement this plan:\n1. add\n2. test")
    assert argvs["plan"][-1] == "Write a plan"


def test_a_secret_in_an_output_reaches_the_next_argv_redacted():
    secret = "sk-ant-handoff-0123456789"
    redaction.remember("ANTHROPIC_API_KEY", secret)  # as the run does when it reads one
    try:
        answer = result_line(f"the key is {secret}, and as JSON: {json.dumps(secret)}")
        records, argvs, _ = launch(HANDOFF, {"plan": Outcome(stdout=answer), "build": DONE})
    finally:
        redaction.forget_all()
    prompt = argvs["build"][-1]
    assert secret not in prompt and secret[4:-4] not in prompt
    assert prompt.count("[REDACTED:ANTHROPIC_API_KEY]") == 2
    assert records["build"].status == NodeStatus.SUCCEEDED


def test_a_secret_put_together_from_two_fields_is_redacted_too():
    """The rendered prompt is redacted as a whole, not each value: an expression that
    joins the halves of a secret still gives the marker."""
    secret = "sk-ant-halves-0123456789"
    text = HANDOFF.replace(
        "nodes.plan.outputs.result", "nodes.plan.outputs.a + nodes.plan.outputs.b"
    ).replace(
        "plan: {runtime: claude,", "plan: {runtime: claude, outputs: {parse: {format: json}},"
    )
    halves = json.dumps({"a": secret[:10], "b": secret[10:]}).encode()
    redaction.remember("ANTHROPIC_API_KEY", secret)
    try:
        records, argvs, _ = launch(text, {"plan": Outcome(stdout=halves), "build": DONE})
    finally:
        redaction.forget_all()
    assert argvs["build"][-1] == "Implement this plan:\n[REDACTED:ANTHROPIC_API_KEY]"
    assert records["build"].status == NodeStatus.SUCCEEDED


def test_a_need_allowed_to_fail_without_the_output_fails_the_node_before_launch():
    text = HANDOFF.replace("needs: [plan]", "needs: [{node: plan, allow_failure: true}]")
    records, argvs, scheduler = launch(text, {"plan": Outcome(exit_code=1)})
    build = records["build"]
    assert build.status == NodeStatus.FAILED and build.attempts == []
    assert build.reason == (
        "prompt `${{ nodes.plan.outputs.result }}`: no such member in mapping: 'result' "
        "(node 'plan' failed)"
    )
    assert "build" not in argvs  # nothing was created for it
    assert scheduler.run_status() == RunStatus.FAILED  # the workflow's fault: exit 1


def test_a_prompt_over_the_policys_limit_fails_before_launch():
    policy = dataclasses.replace(POLICY, limits=dataclasses.replace(POLICY.limits, prompt=100))
    records, argvs, _ = launch(HANDOFF, {"plan": Outcome(stdout=result_line("x" * 200))}, policy)
    assert records["build"].status == NodeStatus.FAILED
    assert records["build"].reason.startswith(
        "prompt is larger than the policy's prompt limit (100 bytes); it is never cut"
    )
    assert "build" not in argvs


def test_a_costly_prompt_is_stopped_by_the_evaluation_deadline():
    text = """
    version: 1
    name: hostile
    nodes:
      data: {runtime: python, command: [x], outputs: {parse: {format: json}}}
      agent:
        runtime: codex
        needs: [data]
        prompt: "${{ nodes.data.outputs.xs.all(x, nodes.data.outputs.xs.all(y, y >= 0)) }}"
        secrets: []
        network: {egress: []}
    """
    many = Outcome(stdout=json.dumps({"xs": list(range(3000))}).encode())
    records, argvs, _ = launch(text, {"data": many}, seconds=2)
    assert records["agent"].status == NodeStatus.FAILED
    assert records["agent"].reason == (
        "prompt evaluation stopped after 2s (the limit for one evaluation)"
    )
    assert "agent" not in argvs


def test_an_interrupt_while_a_prompt_is_rendered_stops_at_once():
    text = """
    version: 1
    name: hostile
    nodes:
      data: {runtime: python, command: [x], outputs: {parse: {format: json}}}
      agent:
        runtime: codex
        needs: [data]
        prompt: "${{ nodes.data.outputs.xs.all(x, nodes.data.outputs.xs.all(y, y >= 0)) }}"
        secrets: []
        network: {egress: []}
    """
    plan = plan_of(textwrap.dedent(text))
    sandboxes = admit(plan, POLICY, environ={})
    many = Outcome(stdout=json.dumps({"xs": list(range(3000))}).encode())
    backend = MemoryBackend(lambda spec: many)
    evaluator = Evaluator(seconds=120)
    runner = NodeRunner(backend, "test-run", "owner", evaluator=evaluator)
    scheduler = Scheduler(plan, sandboxes, runner.attempt, lambda e: None, evaluator=evaluator)

    async def go():
        stop = asyncio.Event()
        task = asyncio.create_task(scheduler.run(stop))
        deadline = time.monotonic() + 60
        # bounded polling of a real condition: data finished, the agent's prompt in work
        while not (scheduler.records["data"].status.finished and evaluator.pid):
            assert time.monotonic() < deadline, "the prompt was never rendered"
            await asyncio.sleep(0.01)
        pid = evaluator.pid
        stop.set()
        began = time.monotonic()
        records = await task
        took = time.monotonic() - began
        await runner.close()
        await evaluator.close()
        return records, took, pid

    records, took, pid = asyncio.run(go())
    assert took < 3, f"the interrupt took {took:.1f}s to act"
    assert records["agent"].status == NodeStatus.CANCELLED and records["agent"].attempts == []
    assert scheduler.run_status() == RunStatus.CANCELLED
    assert not os.path.exists(f"/proc/{pid}")  # killed and reaped
    assert ("start", "agent") not in backend.log and ("start", "data") in backend.log
