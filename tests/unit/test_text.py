"""Untrusted text never starts a line of its own (CI runners obey `::command::` lines)."""

from datetime import UTC, datetime

from sandbox_orch.errors import Problem
from sandbox_orch.events import NodeFinished, RunStarted
from sandbox_orch.text import one_line
from sandbox_orch.view import _line

HOSTILE = "ok\n::set-env name=X::y\r::add-mask::s\x1b[2J\u2028::error::z"


def test_one_line_escapes_every_control_character():
    shown = one_line(HOSTILE)
    assert "\n" not in shown and "\r" not in shown and "\x1b" not in shown and "\u2028" not in shown
    assert shown.startswith("ok\\n::set-env")


def test_plain_view_lines_stay_single_lines():
    now = datetime.now(UTC)
    events = [
        RunStarted("r", HOSTILE, ["a"], now),
        NodeFinished("a", "failed", 1, HOSTILE, 1, 0.1, now),
    ]
    for event in events:
        line = _line(event)
        assert line is not None and "\n" not in line
        assert not any(part.startswith("::") for part in line.splitlines())


def test_refusal_messages_quoting_input_stay_single_lines():
    problem = Problem("wf.yaml", 3, "nodes.a.timeout", f"{HOSTILE!s} is not a duration")
    assert "\n" not in str(problem) and str(problem).startswith("wf.yaml:3: nodes.a.timeout: ok\\n")
