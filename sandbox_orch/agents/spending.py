"""The run's spending as it happens: each attempt's live usage, what finished attempts
spent, and the budgets they are held to.

One object per run, used on the event loop only. The live reader reports an attempt's
usage as its stream moves (`live`); the scheduler reports what each attempt spent in the
end (`settle`) and asks before starting an agent node whether a block budget is spent
already (`refusal`). A block limit crossed stops the attempts it covers at once, through
the stop callback each running attempt registered; a warn limit is reported once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .budgets import Budget, Crossing, crossings, exhausted
from .usage import total

Stop = Callable[[str], None]  # stop this attempt, with this reason
USAGE_EVENT_INTERVAL = 0.5  # seconds between one node's live usage events


@dataclass
class _Node:
    budget: Budget | None
    settled: list[dict[str, Any]] = field(default_factory=list)  # finished attempts
    live: dict[str, Any] | None = None  # the running attempt's, so far
    stop: Stop | None = None
    reported_at: float = 0.0


class Spending:
    def __init__(
        self,
        run_budget: Budget | None,
        node_budgets: Mapping[str, Budget | None],
        report: Callable[[str, int, dict[str, Any], str | None], None] | None = None,
        warn: Callable[[Crossing], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.run_budget = run_budget
        self.nodes = {name: _Node(budget) for name, budget in node_budgets.items()}
        self._report = report
        self._warn = warn
        self._clock = clock
        self._warned: set[tuple[str, str]] = set()
        self.stopped: dict[str, str] = {}  # node -> why a budget stopped it

    # --- totals ------------------------------------------------------------------------

    def node_usage(self, name: str) -> dict[str, Any]:
        """What a node spent: its finished attempts plus the running one."""
        node = self.nodes[name]
        return total([*node.settled, node.live])

    def run_usage(self) -> dict[str, Any]:
        return total(u for node in self.nodes.values() for u in (*node.settled, node.live))

    # --- before a start ----------------------------------------------------------------

    def refusal(self, name: str) -> str | None:
        """Why an agent node may not start: a block budget it falls under is spent."""
        spent = exhausted("run", self.run_budget, self.run_usage())
        spent += exhausted(name, self.nodes[name].budget, self.node_usage(name))
        if not spent:
            return None
        first = spent[0]
        whose = "the run's" if first.scope == "run" else "its"
        spent_of = f"{_amount(first.metric, first.spent)} of {_amount(first.metric, first.limit)}"
        return f"not started: {whose} {first.metric} budget is spent ({spent_of})"

    # --- while it runs -----------------------------------------------------------------

    def attach(self, name: str, stop: Stop) -> None:
        self.nodes[name].stop = stop

    def live(self, name: str, attempt: int, usage: dict[str, Any], activity: str | None) -> None:
        node = self.nodes[name]
        node.live = usage
        now = self._clock()
        if self._report and now - node.reported_at >= USAGE_EVENT_INTERVAL:
            node.reported_at = now
            self._report(name, attempt, self.node_usage(name), activity)
        self._check(name)

    def settle(self, name: str, usage: dict[str, Any] | None) -> None:
        """An attempt ended: its usage (the stream's last word) replaces its live one."""
        node = self.nodes[name]
        node.live, node.stop = None, None
        if usage:
            node.settled.append(usage)
            self._check(name)

    def _check(self, name: str) -> None:
        found = crossings(name, self.nodes[name].budget, self.node_usage(name))
        found += crossings("run", self.run_budget, self.run_usage())
        for crossing in found:
            if crossing.mode == "warn":
                if crossing.key not in self._warned and self._warn:
                    self._warn(crossing)
                self._warned.add(crossing.key)
            elif crossing.scope == "run":
                for other in self.nodes:
                    self._stop(other, crossing.reason)
            else:
                self._stop(name, crossing.reason)

    def _stop(self, name: str, reason: str) -> None:
        node = self.nodes[name]
        if node.stop is None or name in self.stopped:
            return
        self.stopped[name] = reason
        node.stop(reason)


def _amount(metric: str, value: float) -> str:
    return f"${value:.2f}" if metric == "usd" else f"{int(value)}"
