"""Showing a run: a live table (terminals), plain lines (CI, pipes), or JSON events."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TextIO

from .agents.display import answer_lines, budget_bars, cost_text, count, tools_text, usage_text
from .agents.usage import spent_anything, total
from .events import (
    BudgetWarning,
    EgressUnreachable,
    Event,
    NodeDelayed,
    NodeFinished,
    NodeStarted,
    NodeUsage,
    RunFinished,
    RunStarted,
    RunWaiting,
    event_json,
)
from .planning import Plan
from .redaction import scrub, scrub_json
from .stdout import write_line
from .text import one_line
from .timing.countdown import format_left

if TYPE_CHECKING:  # rich is imported by the live view only: plain and JSON runs skip it
    from rich.console import Console, Group
    from rich.table import Table
    from rich.text import Text

PROGRESS_EVERY = 30.0  # seconds between --ci progress lines of a running agent


class PlainView:
    """One line per event, no redraw: safe for CI logs and pipes. A running agent gets
    a progress line at a fixed interval (its spend and latest activity)."""

    def __init__(self, out: TextIO | None = None, progress_every: float = PROGRESS_EVERY) -> None:
        self.out = out or sys.stdout
        self.progress_every = progress_every
        self.latest: dict[str, NodeUsage] = {}
        self._timer: asyncio.TimerHandle | None = None

    def __call__(self, event: Event) -> None:
        match event:
            case NodeUsage():
                self.latest[event.node] = event
                return
            case RunStarted():
                self._arm()
            case NodeFinished():
                self.latest.pop(event.node, None)
            case RunFinished() if self._timer is not None:
                self._timer.cancel()
        line = _line(event)
        if line:
            write_line(self.out, scrub(line))

    def _arm(self) -> None:
        with contextlib.suppress(RuntimeError):  # no loop (a view used outside a run)
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.progress_every, self._progress)

    def _progress(self) -> None:
        for event in list(self.latest.values()):
            activity = f": {event.activity}" if event.activity else ""
            write_line(
                self.out, scrub(f"  running {event.node} [{usage_text(event.usage)}]{activity}")
            )
        self._arm()


class JsonView:
    """One JSON object per line: run_started, node_started, node_finished, run_finished."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    def __call__(self, event: Event) -> None:
        write_line(self.out, scrub_json(event_json(event)))


def _line(event: Event) -> str | None:
    """One line per event. Text that is not ours (a workflow's name, a reason that may
    quote a node's output) goes through one_line, so the only line breaks are ours."""
    match event:
        case RunStarted(run_id=run_id, workflow=workflow, nodes=nodes):
            return f"run {run_id}: {one_line(workflow)} ({len(nodes)} nodes)"
        case NodeStarted(node=node, attempt=attempt):
            return f"  start   {node}" + (f" (attempt {attempt})" if attempt > 1 else "")
        case NodeFinished() as done:
            took = f" in {done.duration_s:.2f}s" if done.duration_s is not None else ""
            code = f" exit {done.exit_code}" if done.exit_code is not None else ""
            why = f": {done.reason}" if done.reason and done.status != "succeeded" else ""
            again = ", retrying" if done.retrying else ""
            tokens = f" [{usage_text(done.usage)}]" if spent_anything(done.usage) else ""
            line = f"  {done.status:<9} {done.node}{code}{took}{tokens}{one_line(why)}{again}"
            return "\n".join([line, *(f"    > {a}" for a in answer_lines(done.answer))])
        case BudgetWarning(reason=reason):
            return f"  warning {one_line(reason)} (warn only: the run goes on)"
        case RunFinished(run_id=run_id, status=status, duration_s=took, totals=totals):
            counts = ", ".join(f"{n} {s}" for s, n in totals.items() if n)
            spent = f", {usage_text(event.usage)}" if spent_anything(event.usage) else ""
            where = f"\nresults: {event.results_path}" if event.results_path else ""
            return f"run {run_id} {status} in {took:.2f}s ({counts}{spent}){where}"
        case RunWaiting(run_id=run_id, start_at=start_at, remaining_s=left):
            return f"run {run_id}: waiting to start at {_local(start_at)} (in {format_left(left)})"
        case NodeDelayed(node=node, delay_s=delay, reason=reason):
            return f"  delay   {node} {delay:.2f}s ({reason})"
        case EgressUnreachable(node=node):
            return f"  network {node}: {one_line(unreachable_text(event))}"
    return None


def unreachable_text(event: EgressUnreachable) -> str:
    return f"cannot reach {event.target}: {event.reason}"


def _local(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


class LiveView:
    """A live table for terminals: each node's state, the need it waits on, attempt,
    duration and exit code; then a final summary. Redraws in place (rich)."""

    def __init__(self, plan: Plan, console: Console | None = None) -> None:
        from rich.console import Console
        from rich.live import Live

        self.plan = plan
        self.console = console or Console()
        self.rows: dict[str, _Row] = {name: _Row() for name in plan.nodes}
        self.header = ""
        self.budget: dict[str, Any] | None = None
        self.run_usage: dict[str, Any] | None = None
        self.warnings: list[str] = []
        self.waiting: RunWaiting | None = None  # `--start-at`: the countdown, until the start
        self.live = Live(console=self.console, refresh_per_second=4, transient=False)
        self.live.update(_Renderable(self), refresh=False)

    def __call__(self, event: Event) -> None:
        match event:
            case RunWaiting() as waiting:
                self.waiting = waiting
                if not self.live.is_started:
                    self.live.start()
            case RunStarted(run_id=run_id, workflow=workflow):
                self.header = scrub(f"run {run_id}: {workflow}")
                self.budget = event.budget
                self.waiting = None
                if not self.live.is_started:
                    self.live.start()
            case NodeUsage() as progress:
                row = self.rows[progress.node]
                row.usage, row.run_usage = progress.usage, None
                row.activity = scrub(progress.activity) if progress.activity else row.activity
                self.run_usage = progress.run_usage or self.run_usage
            case BudgetWarning(reason=reason):
                self.warnings.append(scrub(reason))
            case EgressUnreachable(node=node):
                self.warnings.append(scrub(f"{node}: {one_line(unreachable_text(event))}"))
            case NodeDelayed(node=node, delay_s=delay, reason=reason, at=at):
                row = self.rows[node]
                row.state, row.delayed = "delayed", (reason, at + timedelta(seconds=delay))
            case NodeStarted(node=node, attempt=attempt, at=at):
                row = self.rows[node]
                row.state, row.attempt, row.started = "running", attempt, row.started or at
            case NodeFinished() as done:
                row = self.rows[done.node]
                row.state = "retrying" if done.retrying else done.status
                row.exit_code, row.finished = done.exit_code, done.at
                row.reason = scrub(done.reason) if done.reason else done.reason
                if done.usage:  # the attempt's last word (a live report may not follow)
                    row.settled.append(done.usage)
                    row.usage = total(row.settled)
                if done.answer:
                    row.activity = scrub(answer_lines(done.answer)[0])
            case RunFinished() as finished:
                self.run_usage = finished.usage or self.run_usage
                if self.live.is_started:  # the last figures, before the table stops
                    self.live.refresh()
                self.close()
                for name, row in self.rows.items():
                    for answer in row.answers(name):
                        self.console.print(scrub(answer), markup=False, highlight=False)
                line = _line(finished)
                if line:
                    self.console.print(scrub(line), markup=False, highlight=False)
        if isinstance(event, NodeFinished) and event.answer:
            self.rows[event.node].answer = event.answer

    def close(self) -> None:
        """Stop redrawing (the run ended, or was interrupted before it started)."""
        if self.live.is_started:
            self.live.stop()

    def countdown(self) -> Text:
        from rich.text import Text

        """`--start-at`: one line, recomputed on every refresh, so it counts down."""
        assert self.waiting is not None
        now = datetime.now(UTC)
        left = format_left(max((self.waiting.start_at - now).total_seconds(), 0))
        start = self.waiting.start_at.astimezone()
        day = "" if start.date() == now.astimezone().date() else f"{start:%Y-%m-%d} "
        when = f"{day}{start:%H:%M:%S %Z}"
        return Text(f"run {self.waiting.run_id}: starts {when}, in {left} (Ctrl-C cancels)")

    def table(self) -> Table:
        from rich.table import Table
        from rich.text import Text

        table = Table(title=self.header, title_justify="left", expand=False)
        for column in (
            "node",
            "state",
            "waiting on",
            "attempt",
            "duration",
            "exit",
            "tokens",
            "cost",
            "tools",
            "reason / activity",
        ):
            table.add_column(column)
        now = datetime.now(UTC)
        for name, row in self.rows.items():
            waiting = self._waiting_on(name) if row.state == "pending" else ""
            if row.state == "delayed" and row.delayed is not None:
                why, until = row.delayed
                waiting = f"{why} {format_left(max((until - now).total_seconds(), 0))}"
            end = row.finished if row.state not in ("running", "retrying") else now
            took = f"{(end - row.started).total_seconds():.1f}s" if row.started and end else ""
            table.add_row(
                name,
                Text(row.state, style=_STYLE.get(row.state, "")),
                waiting,
                str(row.attempt or ""),
                took,
                "" if row.exit_code is None else str(row.exit_code),
                _tokens(row.usage),
                cost_text(row.usage).removeprefix(", "),
                tools_text(row.usage),
                Text(row.reason or row.activity or "", overflow="ellipsis", no_wrap=True),
            )
        return table

    def footer(self) -> list[str]:
        """The run's budget bars and the warnings so far."""
        lines = budget_bars(self.budget, self.run_usage) if self.budget else []
        return [*lines, *(f"warning: {w}" for w in self.warnings)]

    def _waiting_on(self, name: str) -> str:
        for edge in self.plan.nodes[name].needs:
            if self.rows[edge.source].state in ("pending", "delayed", "running", "retrying"):
                return edge.source
        return ""


@dataclass
class _Row:
    state: str = "pending"
    attempt: int = 0
    started: datetime | None = None
    finished: datetime | None = None
    exit_code: int | None = None
    reason: str | None = None
    usage: dict[str, Any] | None = None
    delayed: tuple[str, datetime] | None = None  # why, and until when
    run_usage: dict[str, Any] | None = None
    activity: str | None = None
    answer: str | None = None
    settled: list[dict[str, Any]] = field(default_factory=list)  # finished attempts' usage

    def answers(self, name: str) -> list[str]:
        """The summary's lines for an agent's final answer."""
        lines = answer_lines(self.answer)
        return [f"{name}: {lines[0]}", *(f"  {line}" for line in lines[1:])] if lines else []


def _tokens(usage: dict[str, Any] | None) -> str:
    if not spent_anything(usage):
        return ""
    assert usage is not None
    return f"{count(usage.get('input_tokens') or 0)} / {count(usage.get('output_tokens') or 0)}"


class _Renderable:
    """Re-rendered on every refresh, so running durations tick."""

    def __init__(self, view: LiveView) -> None:
        self.view = view

    def __rich__(self) -> Group | Table | Text:
        from rich.console import Group
        from rich.text import Text

        if self.view.waiting is not None:
            return self.view.countdown()
        table = self.view.table()
        footer = self.view.footer()
        if not footer:
            return table
        return Group(table, *(Text(line, overflow="ellipsis", no_wrap=True) for line in footer))


_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "timed_out": "red",
    "errored": "magenta",
    "skipped": "dim",
    "cancelled": "yellow",
    "running": "cyan",
    "retrying": "yellow",
    "delayed": "blue",
}
