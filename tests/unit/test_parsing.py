"""Output parsers: json (whole, else last JSON line), regex (named groups, all)."""

import json

import pytest

from sandbox_orch.parsing import ParseError, parse_output
from sandbox_orch.workflow import ParseSpec


def outputs(spec, out, **kwargs):
    return parse_output(spec, out, **kwargs).outputs


def test_none_gives_no_outputs():
    assert outputs(ParseSpec(), b'{"a": 1}') == {}


def test_json_whole_stdout():
    assert outputs(ParseSpec(format="json"), b'{\n "a": [1, 2]\n}\n') == {"a": [1, 2]}


def test_json_last_json_line_among_logs():
    out = b'starting\n{"stage": 1}\nprogress...\n{"coverage": 91}\ndone\n'
    assert outputs(ParseSpec(format="json"), out) == {"coverage": 91}


def test_json_truncated_output_uses_the_tail():
    out = b'{"big": "xxxx\n[sandbox-orch: 10 bytes of output dropped]\n{"ok": true}\n'
    assert outputs(ParseSpec(format="json"), out, complete=False) == {"ok": True}


@pytest.mark.parametrize("out", [b"plain text", b"[1, 2]", b""])
def test_json_without_an_object_fails(out):
    with pytest.raises(ParseError):
        parse_output(ParseSpec(format="json"), out)


def test_regex_named_groups_of_the_first_match():
    spec = ParseSpec(format="regex", pattern=r"(?P<file>[^:\s]+):(?P<line>\d+)")
    assert outputs(spec, b"src/a.py:12: x\nsrc/b.py:3: y\n") == {
        "file": "src/a.py",
        "line": "12",
    }


def test_regex_all_matches():
    spec = ParseSpec(format="regex", pattern=r"(?P<file>[^:\s]+):(?P<line>\d+)", all=True)
    assert outputs(spec, b"a:1\nb:2\n") == {
        "matches": [{"file": "a", "line": "1"}, {"file": "b", "line": "2"}]
    }
    assert outputs(spec, b"nothing") == {"matches": []}


def test_regex_without_a_match_fails():
    with pytest.raises(ParseError, match="no match"):
        parse_output(ParseSpec(format="regex", pattern=r"(?P<x>\d+)"), b"abc")


def lines(*events):
    return "\n".join(json.dumps(e) for e in events).encode() + b"\n"


def test_claude_stream_json_gives_result_and_usage():
    stream = lines(
        {"type": "system", "subtype": "init", "session_id": "s"},
        {"type": "assistant", "message": {"content": [{"type": "text", "text": "partial"}]}},
        {"type": "result", "subtype": "success", "is_error": False, "num_turns": 2,
         "result": "LGTM: no risks found", "total_cost_usd": 0.0123,
         "usage": {"input_tokens": 100, "cache_read_input_tokens": 20, "output_tokens": 7}},
    )  # fmt: skip
    parsed = parse_output(ParseSpec(format="claude"), b"noise\n" + stream)
    assert parsed.outputs == {"result": "LGTM: no risks found", "is_error": False, "num_turns": 2}
    assert parsed.usage == {"input_tokens": 120, "output_tokens": 7, "cost_usd": 0.0123}


def test_claude_stream_without_a_result_fails():
    with pytest.raises(ParseError, match="no result event"):
        parse_output(ParseSpec(format="claude"), lines({"type": "system"}))


def test_codex_jsonl_gives_last_message_and_summed_usage():
    stream = lines(
        {"type": "thread.started", "thread_id": "t"},
        {"type": "turn.started"},
        {"type": "item.completed", "item": {"id": "1", "type": "reasoning", "text": "hmm"}},
        {"type": "item.completed", "item": {"id": "2", "type": "agent_message", "text": "Done."}},
        {
            "type": "turn.completed",
            "usage": {"input_tokens": 50, "cached_input_tokens": 0, "output_tokens": 9},
        },
    )
    parsed = parse_output(ParseSpec(format="codex"), stream)
    assert parsed.outputs == {"result": "Done.", "is_error": False, "num_turns": 1}
    assert parsed.usage == {"input_tokens": 50, "output_tokens": 9, "cost_usd": None}


def test_codex_failed_turn_is_an_error():
    stream = lines({"type": "turn.failed", "error": {"message": "unauthorized"}})
    assert outputs(ParseSpec(format="codex"), stream)["is_error"] is True
