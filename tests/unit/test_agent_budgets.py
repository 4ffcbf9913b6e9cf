"""Budgets (agents/budgets.py) and the run's spending (agents/spending.py): which limit a
usage crosses, what blocks a start, what stops a running attempt, warnings once."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sandbox_orch.agents.budgets import Budget, crossings, over_ceiling, with_ceiling
from sandbox_orch.agents.display import budget_bars, usage_text
from sandbox_orch.agents.spending import Spending
from sandbox_orch.agents.usage import total


def usage(tokens: int = 0, usd: float = 0.0, turns: int = 0, tools: int = 0) -> dict:
    return {"total_tokens": tokens, "input_tokens": tokens, "cost_usd": usd, "turns": turns,
            "tool_calls": {"Bash": tools} if tools else {}, "cost_source": "reported"}  # fmt: skip


@pytest.mark.parametrize(
    ("written", "limit", "mode"),
    [({"usd": 0.5}, 0.5, "block"), ({"usd": {"limit": 2, "mode": "warn"}}, 2.0, "warn")],
)
def test_a_bare_number_blocks_and_a_mapping_says_its_mode(written, limit, mode):
    budget = Budget(**written)
    assert (budget.usd.limit, budget.usd.mode) == (limit, mode)


@pytest.mark.parametrize(
    "written",
    [{}, {"usd": 0}, {"usd": -1}, {"usd": float("nan")}, {"usd": True}, {"tokens": 1.5},
     {"tokens": {"mode": "warn"}}, {"turns": {"limit": 3, "mode": "stop"}}, {"dollars": 1},
     {"usd": {"limit": 1, "extra": 2}}],
)  # fmt: skip
def test_nonsense_budgets_are_refused(written):
    with pytest.raises(ValidationError):
        Budget(**written)


def test_a_limit_is_crossed_only_past_it():
    budget = Budget(usd=0.5, tokens=100, turns=3, tool_calls=2)
    assert crossings("n", budget, usage(100, 0.5, 3, 2)) == []
    found = crossings("n", budget, usage(101, 0.51, 4, 3))
    assert [(c.metric, c.reason) for c in found] == [
        ("tokens", "budget exceeded: tokens 101 > 100"),
        ("usd", "budget exceeded: usd 0.51 > 0.50"),
        ("turns", "budget exceeded: turns 4 > 3"),
        ("tool_calls", "budget exceeded: tool_calls 3 > 2"),
    ]
    assert crossings("run", Budget(usd=0.5), usage(usd=0.52))[0].reason == (
        "budget exceeded (the run's): usd 0.52 > 0.50"
    )


def test_a_ceiling_refuses_more_and_fills_in_what_is_unset():
    ceiling = Budget(usd=5, tokens={"limit": 1000, "mode": "warn"})
    assert list(over_ceiling(Budget(usd=4), ceiling)) == []
    assert [m for m, _ in over_ceiling(Budget(usd=6), ceiling)] == ["usd"]
    assert [m for m, _ in over_ceiling(Budget(usd={"limit": 1, "mode": "warn"}), ceiling)] == [
        "usd"
    ]
    merged = with_ceiling(Budget(turns=10), ceiling)
    assert (merged.usd.limit, merged.tokens.limit, merged.turns.limit) == (5, 1000, 10)
    assert with_ceiling(None, None) is None


class Recorder:
    def __init__(self) -> None:
        self.stops: list[tuple[str, str]] = []
        self.reports: list[tuple[str, dict]] = []
        self.warnings: list[str] = []

    def stop(self, name: str):
        return lambda reason: self.stops.append((name, reason))


def spending(run=None, **nodes) -> tuple[Spending, Recorder, list[float]]:
    seen = Recorder()
    now = [0.0]
    found = Spending(
        run, nodes, lambda n, a, u, act: seen.reports.append((n, u)),
        lambda c: seen.warnings.append(c.reason), clock=lambda: now[0],
    )  # fmt: skip
    return found, seen, now


def test_a_node_block_budget_stops_that_node_once():
    found, seen, _ = spending(a=Budget(usd=0.5), b=None)
    found.attach("a", seen.stop("a"))
    found.attach("b", seen.stop("b"))
    found.live("a", 1, usage(usd=0.4), None)
    assert seen.stops == []
    found.live("a", 1, usage(usd=0.52), None)
    found.live("a", 1, usage(usd=0.6), None)
    assert seen.stops == [("a", "budget exceeded: usd 0.52 > 0.50")]


def test_a_run_block_budget_stops_every_running_agent():
    found, seen, _ = spending(Budget(tokens=100), a=None, b=None, c=None)
    found.attach("a", seen.stop("a"))
    found.attach("b", seen.stop("b"))
    found.live("a", 1, usage(60), None)
    found.live("b", 1, usage(41), None)
    assert sorted(name for name, _ in seen.stops) == ["a", "b"]
    assert found.refusal("c") == "not started: the run's tokens budget is spent (101 of 100)"


def test_a_warn_budget_warns_once_and_stops_nothing():
    found, seen, _ = spending(Budget(usd={"limit": 0.1, "mode": "warn"}), a=None)
    found.attach("a", seen.stop("a"))
    for spent in (0.2, 0.3, 0.4):
        found.live("a", 1, usage(usd=spent), None)
    assert seen.warnings == ["budget exceeded (the run's): usd 0.20 > 0.10"] and seen.stops == []
    assert found.refusal("a") is None


def test_retries_add_up_against_the_node_budget():
    found, seen, _ = spending(a=Budget(turns=5))
    found.attach("a", seen.stop("a"))
    found.live("a", 1, usage(turns=3), None)
    found.settle("a", usage(turns=3))
    assert found.refusal("a") is None
    found.attach("a", seen.stop("a"))
    found.live("a", 2, usage(turns=3), None)  # 3 + 3 > 5
    assert seen.stops == [("a", "budget exceeded: turns 6 > 5")]
    found.settle("a", usage(turns=3))
    assert found.refusal("a") == "not started: its turns budget is spent (6 of 5)"
    assert found.node_usage("a")["turns"] == 6


def test_live_reports_are_spaced_by_the_interval():
    found, seen, now = spending(a=None)
    for moment in (0.5, 0.6, 0.9, 1.0, 1.6):
        now[0] = moment
        found.live("a", 1, usage(int(moment * 10)), None)
    assert [u["total_tokens"] for _, u in seen.reports] == [5, 10, 16]


def test_totals_add_attempts_and_mark_a_partly_unpriced_sum():
    summed = total([usage(10, 0.1, 1, 2), None, {**usage(5), "cost_usd": None,
                    "cost_source": "unpriced", "models": ["x"]}])  # fmt: skip
    assert (summed["total_tokens"], summed["cost_usd"], summed["turns"]) == (15, 0.1, 1)
    assert summed["tool_calls"] == {"Bash": 2} and summed["cost_source"] == "reported+unpriced"


def test_display_texts():
    shown = {**usage(1500, 0.0123, tools=2), "output_tokens": 300,
             "cache_read_input_tokens": 10_000, "cache_creation_input_tokens": 0}  # fmt: skip
    assert usage_text(shown) == (
        "1.5k in / 300 out tokens (cache 10.0k read, 0 written), $0.0123, 2 tool calls"
    )
    bars = budget_bars({"usd": {"limit": 0.5, "mode": "block"}}, usage(usd=0.25))
    assert bars == ["usd        [##########----------] $0.25 of $0.50 (block)"]


def test_a_report_held_back_by_the_interval_is_sent_when_it_ends():
    """A stream that goes quiet right after a held-back update still gets it reported."""
    reports, due = [], []
    now = [0.0]
    found = Spending(None, {"a": None}, lambda n, a, u, act: reports.append(u["total_tokens"]),
                     clock=lambda: now[0], later=lambda wait, f: due.append((wait, f)))  # fmt: skip
    found.live("a", 1, usage(1), "first")
    now[0] = 0.1
    found.live("a", 1, usage(2), "second")
    found.live("a", 1, usage(3), "third")
    assert reports == [1] and len(due) == 1 and due[0][0] == pytest.approx(0.4)
    now[0] = 0.5
    due.pop()[1]()
    assert reports == [1, 3] and due == []
    found.settle("a", usage(3))
    found.live("a", 2, usage(4), None)  # a later attempt reports as before
    assert len(reports) == 2 and len(due) == 1


def test_a_budget_on_a_node_that_is_no_agent_is_refused_with_its_line():
    from sandbox_orch.errors import InputRefused

    from .helpers import admitted

    text = "version: 1\nname: x\nnodes:\n  a: {command: [x], budget: {usd: 1}}\n"
    with pytest.raises(InputRefused) as refused:
        admitted(text)
    (problem,) = refused.value.problems
    assert ":4: nodes.a.budget: a budget counts what an agent's stream reports" in str(problem)
