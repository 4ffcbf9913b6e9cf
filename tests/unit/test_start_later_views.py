"""How a wait shows: `--ci` lines, `--json` events, the live view's countdown line and
its delayed rows; and `run`'s refusals of --start-at and --stagger (exit 2, at once)."""

from __future__ import annotations

import io
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from rich.console import Console

from sandbox_orch.cli import main
from sandbox_orch.events import NodeDelayed, RunStarted, RunWaiting
from sandbox_orch.view import JsonView, LiveView, PlainView

from .helpers import plan_of

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
WAITING = RunWaiting("run-1", NOW + timedelta(minutes=90), 5400.0, NOW)
DELAYED = NodeDelayed("b", 2.5, "start_delay", NOW)


def test_plain_lines_for_a_wait_and_a_delay():
    out = io.StringIO()
    view = PlainView(out)
    view(WAITING)
    view(DELAYED)
    first, second = out.getvalue().splitlines()
    local = (NOW + timedelta(minutes=90)).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert first.startswith(f"run run-1: waiting to start at {local}")
    assert first.endswith("(in 1h30m00s)")
    assert second == "  delay   b 2.50s (start_delay)"


def test_json_events_for_a_wait_and_a_delay():
    out = io.StringIO()
    view = JsonView(out)
    view(WAITING)
    view(DELAYED)
    waiting, delayed = (json.loads(line) for line in out.getvalue().splitlines())
    assert waiting == {
        "event": "run_waiting",
        "run_id": "run-1",
        "start_at": "2026-12-01T13:30:00.000Z",
        "remaining_s": 5400.0,
        "at": "2026-12-01T12:00:00.000Z",
    }
    assert delayed["event"] == "node_delayed" and delayed["delay_s"] == 2.5


def test_the_live_view_counts_down_then_shows_the_table_with_delayed_rows():
    plan = plan_of("version: 1\nname: x\nnodes:\n  a: {command: [x]}\n  b: {command: [x]}\n")
    console = Console(file=io.StringIO(), width=120, force_terminal=False)
    view = LiveView(plan, console)
    start_at = datetime.now(UTC) + timedelta(seconds=30)
    view(RunWaiting("run-1", start_at, 30.0, datetime.now(UTC)))
    try:
        line = view.countdown().plain
        assert line.startswith("run run-1: starts ")
        assert "in 30s" in line or "in 29s" in line
        assert line.endswith("(Ctrl-C cancels)")
        assert len(line) <= 80  # one line on a classic terminal
        view(RunStarted("run-1", "x", ["a", "b"], datetime.now(UTC)))
        assert view.waiting is None
        view(NodeDelayed("b", 60.0, "stagger", datetime.now(UTC)))
        assert view.rows["b"].state == "delayed"
        rendered = io.StringIO()
        Console(file=rendered, width=160).print(view.table())
        assert "stagger 1m00s" in rendered.getvalue() or "stagger 59s" in rendered.getvalue()
    finally:
        view.close()
    assert not view.live.is_started
    view.close()  # twice is fine


@pytest.fixture
def workflow(tmp_path):
    path = tmp_path / "wf.yaml"
    path.write_text("version: 1\nname: x\nnodes:\n  a: {command: [x]}\n")
    return path


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--start-at", "25:00", "--start-at: '25:00' is not a clock time"),
        ("--start-at", "later", "--start-at: 'later' is not a clock time (14:30"),
        ("--start-at", "2020-01-01T00:00Z", "--start-at: '2020-01-01T00:00Z' is in the past"),
        ("--stagger", "fast", "--stagger: 'fast' is not a duration"),
        ("--stagger", "0s", "--stagger: a duration must be a positive"),
    ],
)
def test_a_bad_start_time_or_stagger_is_refused_before_anything(
    workflow, option, value, message, monkeypatch
):
    monkeypatch.setattr("sandbox_orch.cli.workflows.with_backend", _no_engine)
    result = CliRunner().invoke(main, ["run", str(workflow), "--ci", option, value])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(message)
    assert len(result.stderr.splitlines()) == 1


def test_a_refused_workflow_with_a_start_time_is_refused_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr("sandbox_orch.cli.workflows.with_backend", _no_engine)
    path = tmp_path / "wf.yaml"
    path.write_text("version: 1\nname: x\nnodes:\n  a: {command: [x], privileged: true}\n")
    began = time.monotonic()
    result = CliRunner().invoke(main, ["run", str(path), "--ci", "--start-at", "2h"])
    assert result.exit_code == 2
    assert "privileged" in result.stderr
    assert time.monotonic() - began < 10


async def _no_engine(*_args, **_kwargs):
    raise AssertionError("a refused run must not reach the engine")


def test_plan_shows_a_start_delay(tmp_path):
    path = tmp_path / "wf.yaml"
    path.write_text(
        "version: 1\nname: x\nnodes:\n  a: {command: [x], start_delay: 90s}\n  b: {command: [x]}\n"
    )
    text = CliRunner().invoke(main, ["plan", str(path)])
    assert text.exit_code == 0, text.output
    assert "    start_delay: 90s once due" in text.stdout.splitlines()
    document = json.loads(CliRunner().invoke(main, ["plan", str(path), "--format", "json"]).stdout)
    assert document["nodes"]["a"]["start_delay_s"] == 90
    assert document["nodes"]["b"]["start_delay_s"] is None
