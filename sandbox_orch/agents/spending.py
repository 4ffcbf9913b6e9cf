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
    reported_at: float = float("-inf")
    latest: tuple[int, str | None] = (0, None)  # the running attempt, its latest activity
    held: bool = False  # a report is due when the interval ends


class Spending:
    def __init__(
        self,
        run_budget: Budget | None,
        node_budgets: Mapping[str, Budget | None],
        report: Callable[[str, int, dict[str, Any], str | None], None] | None = None,
        warn: Callable[[Crossing], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        later: Callable[[float, Callable[[], None]], Any] | None = None,
    ) -> None:
        self.run_budget = run_budget
        self.nodes = {name: _Node(budget) for name, budget in node_budgets.items()}
        self._report = report
        self._warn = warn
        self._clock = clock
        self._later = later  # runs a callback after a delay (the event loop's call_later)
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
        node.live, node.latest = usage, (attempt, activity)
        self._maybe_report(name)
        self._check(name)

    def _maybe_report(self, name: str) -> None:
        """At most one event per node per interval; one held back is sent when the
        interval ends, so the last word is never lost to a stream that went quiet."""
        node = self.nodes[name]
        if self._report is None or node.live is None or node.held:
            return
        wait = node.reported_at + USAGE_EVENT_INTERVAL - self._clock()
        if wait <= 0:
            node.reported_at = self._clock()
            self._report(name, node.latest[0], self.node_usage(name), node.latest[1])
        elif self._later is not None:
            node.held = True
            self._later(wait, lambda: self._release(name))

    def _release(self, name: str) -> None:
        self.nodes[name].held = False
        self._maybe_report(name)

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
