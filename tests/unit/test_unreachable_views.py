"""A granted egress target that cannot be reached, as each view shows it: a `--ci` line,
a JSON event, a warning under the live table (issue 12: said at once, not after minutes)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

from rich.console import Console

from sandbox_orch.events import EgressUnreachable, RunStarted
from sandbox_orch.view import JsonView, LiveView, PlainView

from .helpers import plan_of

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
EVENT = EgressUnreachable("single", "api.anthropic.com:443", "connection refused", NOW)


def test_a_plain_line_names_the_node_the_target_and_why():
    out = io.StringIO()
    PlainView(out)(EVENT)
    assert out.getvalue() == (
        "  network single: cannot reach api.anthropic.com:443: connection refused\n"
    )


def test_a_reason_with_line_breaks_stays_one_line():
    out = io.StringIO()
    PlainView(out)(EgressUnreachable("n", "h:1", "a\nrun x succeeded", NOW))
    assert len(out.getvalue().splitlines()) == 1


def test_a_json_event():
    out = io.StringIO()
    JsonView(out)(EVENT)
    assert json.loads(out.getvalue()) == {
        "event": "egress_unreachable",
        "node": "single",
        "target": "api.anthropic.com:443",
        "reason": "connection refused",
        "at": "2026-12-01T12:00:00.000Z",
    }


def test_the_live_view_shows_it_under_the_table():
    plan = plan_of("version: 1\nname: x\nnodes:\n  single: {command: [x]}\n")
    view = LiveView(plan, Console(file=io.StringIO(), width=120, force_terminal=False))
    view(RunStarted("run-1", "x", ["single"], NOW))
    try:
        view(EVENT)
        assert view.footer() == [
            "warning: single: cannot reach api.anthropic.com:443: connection refused"
        ]
    finally:
        view.close()
