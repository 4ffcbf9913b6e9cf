"""Agents' usage in the scheduler, on the in-memory backend: conditions read
`nodes.X.usage`, a spent run budget skips the next agent before it starts, and a node
budget crossed by the stream stops the node (failed, with the budget as its reason)."""

from __future__ import annotations

import json

from sandbox_orch.agents.spending import Spending
from sandbox_orch.backend.memory import Outcome
from sandbox_orch.execution import NODE_LABEL
from sandbox_orch.orchestrator import RunOptions, run_budget
from sandbox_orch.scheduler import is_agent

from .helpers import admitted, run_on_memory


def stream(cost: float, tools: int = 1, hang: bool = False) -> Outcome:
    """A Claude Code stream: one answer with `tools` Bash calls, then (unless it hangs)
    its result reporting `cost`."""
    events = [
        {"type": "assistant", "message": {"id": "m1", "model": "claude-opus-5-5",
         "usage": {"input_tokens": 100, "output_tokens": 10},
         "content": [{"type": "tool_use", "id": f"t{i}", "name": "Bash", "input": {}}
                     for i in range(tools)]}},
    ]  # fmt: skip
    if not hang:
        events.append({"type": "result", "result": "done", "num_turns": 1,
                       "total_cost_usd": cost, "usage": {"input_tokens": 100,
                       "output_tokens": 10}})  # fmt: skip
    out = "".join(json.dumps(e) + "\n" for e in events).encode()
    return Outcome(stdout=out, hang=hang)


AGENTS = """
version: 1
name: x
fail_fast: false
{budget}
nodes:
  a: {{command: [x], outputs: {{parse: {{format: claude}}}}{node_budget}}}
  b:
    needs: [{{node: a, allow_failure: true}}]
    command: [x]
    outputs: {{parse: {{format: claude}}}}
    when: {when}
"""


def run(text: str, outcomes: dict[str, Outcome]):
    plan, sandboxes = admitted(text)
    agents = {n.name: n.request.budget for n in plan.nodes.values() if is_agent(n)}
    spending = Spending(run_budget(plan, _NoCeiling(), RunOptions()), agents)
    script = lambda spec: outcomes[spec.labels[NODE_LABEL]]  # noqa: E731
    return run_on_memory(plan, sandboxes, script, spending=spending)[1]


class _NoCeiling:
    class agents:  # the policy's section, without a ceiling
        budget = None


def test_a_condition_reads_what_an_agent_spent():
    text = AGENTS.format(
        budget="", node_budget="",
        when='"nodes.a.usage.cost_usd < 0.5 && nodes.a.usage.tool_calls.Bash == 2"',
    )  # fmt: skip
    records = run(text, {"a": stream(0.25, tools=2), "b": stream(0.1)})
    assert records["b"].condition_result is True and records["b"].status.value == "succeeded"
    records = run(text, {"a": stream(0.75, tools=2), "b": stream(0.1)})
    assert records["b"].condition_result is False and records["b"].status.value == "skipped"


def test_a_spent_run_budget_skips_the_next_agent_before_it_starts():
    text = AGENTS.format(budget="budget: {usd: {limit: 0.5, mode: warn}, tokens: 100}",
                         node_budget="", when='"true"')  # fmt: skip
    records = run(text, {"a": stream(0.6), "b": stream(0.1)})
    a, b = records["a"], records["b"]
    assert a.status.value == "failed"
    assert a.reason == "budget exceeded (the run's): tokens 110 > 100"
    assert b.status.value == "skipped" and not b.attempts
    assert b.skip_reason == "not started: the run's tokens budget is spent (110 of 100)"


def test_a_node_budget_stops_a_running_node_and_keeps_its_usage():
    text = AGENTS.format(budget="", node_budget=", budget: {tool_calls: 2}", when='"true"')
    records = run(text, {"a": stream(0.1, tools=3, hang=True), "b": stream(0.1)})
    a = records["a"]
    assert a.status.value == "failed" and a.reason == "budget exceeded: tool_calls 3 > 2"
    assert a.last.usage["tool_calls"] == {"Bash": 3} and a.last.usage["input_tokens"] == 100
    assert records["b"].status.value == "succeeded"  # a's own budget holds only a
