"""Showing a run: plain lines (CI, pipes) or one JSON object per event (`--json`)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from datetime import datetime
from typing import Any, TextIO

from .events import Event, NodeFinished, NodeStarted, RunFinished, RunStarted


class PlainView:
    """One line per event, no redraw: safe for CI logs and pipes."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    def __call__(self, event: Event) -> None:
        line = _line(event)
        if line:
            print(line, file=self.out, flush=True)


class JsonView:
    """One JSON object per line: run_started, node_started, node_finished, run_finished."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    def __call__(self, event: Event) -> None:
        print(json.dumps(event_json(event)), file=self.out, flush=True)


_KINDS = {
    RunStarted: "run_started",
    NodeStarted: "node_started",
    NodeFinished: "node_finished",
    RunFinished: "run_finished",
}


def event_json(event: Event) -> dict[str, Any]:
    body = {k: _plain(v) for k, v in asdict(event).items()}
    return {"event": _KINDS[type(event)], **body}


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return value


def _line(event: Event) -> str | None:
    match event:
        case RunStarted(run_id=run_id, workflow=workflow, nodes=nodes):
            return f"run {run_id}: {workflow} ({len(nodes)} nodes)"
        case NodeStarted(node=node, attempt=attempt):
            return f"  start   {node}" + (f" (attempt {attempt})" if attempt > 1 else "")
        case NodeFinished() as done:
            took = f" in {done.duration_s:.2f}s" if done.duration_s is not None else ""
            code = f" exit {done.exit_code}" if done.exit_code is not None else ""
            why = f": {done.reason}" if done.reason and done.status != "succeeded" else ""
            again = ", retrying" if done.retrying else ""
            return f"  {done.status:<9} {done.node}{code}{took}{why}{again}"
        case RunFinished(run_id=run_id, status=status, duration_s=took, totals=totals):
            counts = ", ".join(f"{n} {s}" for s, n in totals.items() if n)
            where = f"\nresults: {event.results_path}" if event.results_path else ""
            return f"run {run_id} {status} in {took:.2f}s ({counts}){where}"
    return None
