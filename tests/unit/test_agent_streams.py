"""Agents' streams read live (agents/streams.py): usage counted once per message, the
session's own totals winning at the end, hostile lines bounded, and a stream fed in any
chunking giving the same answer. Recorded streams are real Claude Code 2.1.331 output
against tests/mockapi."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandbox_orch.agents.pricing import table, table_from
from sandbox_orch.agents.streams import MAX_LINE, ClaudeStream, CodexStream, Lines, StreamProblem

DATA = Path(__file__).parent / "data"
THREE_TURNS = (DATA / "claude-2.1.331-three-turns.jsonl").read_bytes()
MAX_BUDGET = (DATA / "claude-2.1.331-max-budget.jsonl").read_bytes()


def lines(*events: dict) -> bytes:
    return b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in events)


def fed(reader, data: bytes, size: int | None = None):
    size = size or len(data) or 1
    for at in range(0, len(data), size):
        reader.feed(data[at : at + size])
    reader.finish()
    return reader


# --- the recorded real streams ----------------------------------------------------------------


def test_a_real_stream_counts_what_the_mock_served():
    """TOOL_TURNS:2 CACHE:100:20 OUTPUT_TOKENS:500: three answers, each 11 in, 500 out,
    100 cache read and 20 written; two Bash calls."""
    reader = fed(ClaudeStream(), THREE_TURNS)
    usage = reader.usage_json()
    assert (usage["input_tokens"], usage["output_tokens"]) == (33, 1500)
    assert (usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"]) == (300, 60)
    assert usage["total_tokens"] == 33 + 1500 + 300 + 60
    assert usage["tool_calls"] == {"Bash": 2} and usage["turns"] == 3
    assert usage["models"] == ["claude-opus-5-5"]
    assert (usage["cost_usd"], usage["cost_source"]) == (0.030492, "reported")
    assert reader.outputs() == {"result": "MOCK: all good", "is_error": False, "num_turns": 3}


def test_before_its_result_a_real_stream_is_priced_as_the_cli_reports_it():
    """Live (no result yet), the pricing table gives Claude Code's own figure."""
    head = THREE_TURNS[: THREE_TURNS.rindex(b'\n{"duration_api_ms"') + 1]
    reader = ClaudeStream()
    reader.feed(head)
    usage = reader.usage_json()
    assert (usage["output_tokens"], usage["turns"], usage["tool_calls"]) == (1500, 3, {"Bash": 2})
    assert (usage["cost_usd"], usage["cost_source"]) == (0.030492, "priced")
    with pytest.raises(StreamProblem, match="no result event"):
        reader.outputs()


@pytest.mark.parametrize("size", [1, 7, 100, 4096])
def test_any_chunking_gives_the_same_usage(size):
    whole = fed(ClaudeStream(), THREE_TURNS).usage_json()
    assert fed(ClaudeStream(), THREE_TURNS, size).usage_json() == whole


def test_an_error_result_keeps_the_usage_its_usage_block_drops():
    """error_max_budget_usd: `usage` is all zeros, `modelUsage` has the figures."""
    reader = fed(ClaudeStream(), MAX_BUDGET)
    usage = reader.usage_json()
    assert (usage["input_tokens"], usage["output_tokens"]) == (11, 1000)
    assert usage["cost_usd"] == 0.020044 and usage["cost_source"] == "reported"
    assert reader.is_error and reader.error == "Reached maximum budget ($0.00001)"
    assert reader.outputs()["is_error"] is True


# --- counting once ----------------------------------------------------------------------------


def assistant(message_id: str, usage: dict, *content: dict, model: str = "claude-opus-5-5"):
    return {"type": "assistant", "message": {"id": message_id, "model": model,
                                             "content": list(content), "usage": usage}}  # fmt: skip


def test_a_message_repeated_is_counted_once_and_grows_to_its_largest():
    stream = lines(
        assistant("m1", {"input_tokens": 10, "output_tokens": 0}, {"type": "text", "text": "a"}),
        assistant("m1", {"input_tokens": 10, "output_tokens": 5},
                  {"type": "tool_use", "id": "t1", "name": "Edit", "input": {"file_path": "x"}}),
        assistant("m1", {"input_tokens": 10, "output_tokens": 5},
                  {"type": "tool_use", "id": "t1", "name": "Edit", "input": {}}),
        assistant("m2", {"input_tokens": 3, "output_tokens": 2}),
    )  # fmt: skip
    usage = fed(ClaudeStream(), stream).usage_json()
    assert (usage["input_tokens"], usage["output_tokens"], usage["turns"]) == (13, 7, 2)
    assert usage["tool_calls"] == {"Edit": 1}


def test_partial_message_deltas_count_output_before_the_assistant_event():
    start = {
        "type": "stream_event",
        "event": {
            "type": "message_start",
            "message": {
                "id": "m1",
                "model": "claude-opus-5-5",
                "usage": {"input_tokens": 4, "output_tokens": 0},
            },
        },
    }
    delta = {"type": "stream_event", "event": {"type": "message_delta",
             "usage": {"output_tokens": 50}}, "api_message_id": "m1"}  # fmt: skip
    reader = ClaudeStream()
    assert reader.feed(lines(start)) is True
    assert reader.feed(lines(delta)) is True
    assert reader.usage_json()["output_tokens"] == 50
    assert reader.feed(lines(assistant("m1", {"input_tokens": 4, "output_tokens": 1}))) is False


def test_models_are_priced_each_at_its_own_rate():
    stream = lines(
        assistant("a", {"input_tokens": 1_000_000}),
        assistant("b", {"output_tokens": 1_000_000}, model="claude-haiku-4-5-20251001"),
    )
    usage = fed(ClaudeStream(), stream).usage_json()
    assert usage["models"] == ["claude-haiku-4-5-20251001", "claude-opus-5-5"]
    assert (usage["cost_usd"], usage["cost_source"]) == (4.0 + 5.0, "priced")


def test_an_unknown_model_is_unpriced_never_guessed():
    usage = fed(
        ClaudeStream(), lines(assistant("a", {"input_tokens": 9}, model="x-1"))
    ).usage_json()
    assert (usage["cost_usd"], usage["cost_source"]) == (None, "unpriced")


# --- hostile streams --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        (assistant("a", {"input_tokens": "9" * 5000}), "usage.input_tokens is not a count"),
        (assistant("a", {"output_tokens": -1}), "usage.output_tokens is not a count"),
        (assistant("a", [1]), "usage is not an object"),
        ({"type": "result", "result": 5}, "result is not text"),
        (
            {"type": "result", "result": "x", "total_cost_usd": "1"},
            "total_cost_usd is not a number",
        ),
        (
            {"type": "result", "result": "x", "modelUsage": {"m": []}},
            "modelUsage entry is not an object",
        ),
    ],
)
def test_a_field_of_the_wrong_type_fails_the_node_and_is_not_counted(event, problem):
    reader = fed(ClaudeStream(), lines(event))
    assert reader.usage_json()["total_tokens"] == 0
    with pytest.raises(StreamProblem, match=problem):
        reader.outputs()


def test_a_line_past_the_limit_is_dropped_without_being_kept():
    feeder = Lines()
    huge = b'{"type":"assistant"' + b" " * (MAX_LINE + 10)
    assert list(feeder.feed(huge[: MAX_LINE // 2])) == []
    assert list(feeder.feed(huge[MAX_LINE // 2 :])) == [] and len(feeder._partial) == 0
    assert list(feeder.feed(b"tail\n{}\n")) == [b"{}"]  # the rest of that line is dropped too
    assert feeder.dropped == 1


def test_lines_nested_too_deep_or_not_json_are_skipped():
    stream = (
        b"[" * 100_000
        + b"\n"
        + b'{"a": ' * 100
        + b"\nnot json\n"
        + lines({"type": "result", "result": "done", "num_turns": 1})
    )
    assert fed(ClaudeStream(), stream).outputs()["result"] == "done"


def test_activity_is_one_escaped_line():
    stream = lines(assistant("a", {}, {"type": "text", "text": "line one\nline two\x1b[2J"}))
    assert fed(ClaudeStream(), stream).activity == "line one\\nline two\\x1b[2J"


def test_a_tool_call_shows_its_command():
    block = {"type": "tool_use", "id": "t", "name": "Bash", "input": {"command": "make test"}}
    assert fed(ClaudeStream(), lines(assistant("a", {}, block))).activity == "Bash: make test"


# --- Codex ------------------------------------------------------------------------------------


CODEX = lines(
    {"type": "thread.started", "thread_id": "t"},
    {"type": "item.started", "item": {"id": "i1", "type": "command_execution", "command": "ls"}},
    {"type": "item.completed", "item": {"id": "i1", "type": "command_execution", "command": "ls"}},
    {
        "type": "item.completed",
        "item": {"id": "i2", "type": "mcp_tool_call", "server": "gh", "tool": "search"},
    },
    {"type": "item.completed", "item": {"id": "i3", "type": "agent_message", "text": "Done."}},
    {
        "type": "turn.completed",
        "usage": {"input_tokens": 1000, "cached_input_tokens": 400, "output_tokens": 50},
    },
)


def test_codex_counts_cached_input_once_tools_once_and_prices_its_default_model():
    reader = fed(CodexStream(), CODEX)
    usage = reader.usage_json()
    assert (usage["input_tokens"], usage["cache_read_input_tokens"]) == (600, 400)
    assert usage["tool_calls"] == {"mcp:gh.search": 1, "shell": 1}
    assert usage["models"] == [table().defaults["codex"]]
    assert usage["cost_source"] == "priced"
    assert reader.outputs() == {"result": "Done.", "is_error": False, "num_turns": 1}


def test_codex_uses_the_node_model_when_it_names_one():
    prices = table_from({"date": "d", "models": {"m-1": {"input": 1, "output": 2,
                         "cache_read": 0.5, "cache_write": 0}}})  # fmt: skip
    usage = fed(CodexStream(prices, model="m-1"), CODEX).usage_json()
    assert usage["cost_usd"] == (600 * 1 + 50 * 2 + 400 * 0.5) / 1e6


def test_codex_failed_turn_gives_its_message():
    stream = lines({"type": "turn.failed", "error": {"message": "unauthorized\nretry"}})
    reader = fed(CodexStream(), stream)
    assert reader.error == "unauthorized\\nretry" and reader.outputs()["is_error"] is True


RECONNECT = "Reconnecting... 1/5 (unexpected status 502 Bad Gateway)"


def test_codex_error_events_before_a_completed_turn_were_retries_not_a_failure():
    stream = lines({"type": "error", "message": RECONNECT}) + CODEX
    reader = fed(CodexStream(), stream)
    assert reader.error is None and reader.is_error is False
    assert reader.outputs() == {"result": "Done.", "is_error": False, "num_turns": 1}


def test_codex_error_events_show_as_activity_and_the_last_is_the_error_if_nothing_follows():
    reader = CodexStream()
    assert reader.feed(lines({"type": "error", "message": RECONNECT})) is True
    assert reader.activity == RECONNECT
    reader.feed(lines({"type": "error", "message": "unexpected status 502"}))
    assert (reader.error, reader.is_error) == ("unexpected status 502", True)
    assert reader.outputs()["is_error"] is True


def test_codex_failed_turn_without_a_message_gives_the_error_before_it():
    stream = lines(
        {"type": "item.completed", "item": {"id": "e1", "type": "error", "message": "quota"}},
        {"type": "turn.failed", "error": {}},
    )
    reader = fed(CodexStream(), stream)
    assert (reader.said, reader.error, reader.activity) == ("quota", "quota", "quota")
    bare = fed(CodexStream(), lines({"type": "turn.failed"}))
    assert bare.error == "the turn failed"


def test_a_codex_error_item_alone_fails_nothing():
    stream = (
        lines(
            {"type": "item.completed", "item": {"id": "e1", "type": "error", "message": "odd\n"}},
        )
        + CODEX
    )
    reader = fed(CodexStream(), stream)
    assert reader.said == "odd\\n" and reader.error is None and reader.is_error is False
