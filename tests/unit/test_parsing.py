"""Output parsers: json (whole, else last JSON line), regex (named groups, all)."""

import json
import time

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
    usage = parsed.usage
    assert (usage["input_tokens"], usage["cache_read_input_tokens"]) == (100, 20)
    assert (usage["output_tokens"], usage["total_tokens"], usage["turns"]) == (7, 127, 2)
    assert (usage["cost_usd"], usage["cost_source"]) == (0.0123, "reported")


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
    usage = parsed.usage
    assert (usage["input_tokens"], usage["output_tokens"], usage["models"]) == (
        50,
        9,
        ["gpt-6.1-sol"],
    )
    # priced from agents/pricing.json: $2 in, $10 out per million
    assert (usage["cost_usd"], usage["cost_source"]) == (0.00019, "priced")


def test_codex_failed_turn_is_an_error():
    stream = lines({"type": "turn.failed", "error": {"message": "unauthorized"}})
    assert outputs(ParseSpec(format="codex"), stream)["is_error"] is True


# --- bounded: hostile output fails the node with a reason, never the run ---------------------


@pytest.mark.parametrize(
    "out",
    [b"[" * 100_000, b"[" * 65 + b"]" * 65, b'{"a": ' * 70 + b"1" + b"}" * 70],
    ids=["unclosed-100k", "closed-65", "objects-70"],
)
def test_json_nested_too_deep_fails_with_the_documented_limit(out):
    with pytest.raises(ParseError, match="json parser: the value is nested deeper than 64 levels"):
        parse_output(ParseSpec(format="json"), out)


def test_json_at_the_depth_limit_parses():
    value = parse_output(ParseSpec(format="json"), b'{"a": ' + b"[" * 63 + b"]" * 63 + b"}")
    assert "a" in value.outputs


def test_json_deep_last_line_fails_too():
    out = b"log\n" + b"[" * 5000 + b"\n"
    with pytest.raises(ParseError, match="nested deeper"):
        parse_output(ParseSpec(format="json"), out, complete=False)


def test_regex_catastrophic_pattern_is_linear():
    spec = ParseSpec(format="regex", pattern=r"(?P<run>(a+)+)$")
    began = time.monotonic()
    with pytest.raises(ParseError, match="no match"):
        parse_output(spec, b"a" * (1 << 20) + b"!")
    assert time.monotonic() - began < 5


def test_regex_all_stops_at_the_output_limit():
    spec = ParseSpec(format="regex", pattern=r"(?P<x>)", all=True)  # a match at every byte
    with pytest.raises(ParseError, match="larger than the policy's output limit"):
        parse_output(spec, b"a" * (1 << 20), limit=10_000)


def test_regex_matches_characters_not_bytes():
    spec = ParseSpec(format="regex", pattern=r"(?P<word>.é.)")
    assert outputs(spec, "xyéz\xff".encode() + b"\xff") == {"word": "yéz"}
    # invalid bytes are U+FFFD, one character each, as with Python's re before
    assert outputs(ParseSpec(format="regex", pattern=r"(?P<c>.)x"), b"\xffx") == {"c": "\ufffd"}


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"type": "result", "result": ["not", "text"]}, "claude parser: result is not text"),
        ({"type": "result", "result": "x", "num_turns": "9" * 5000}, "num_turns is not a count"),
        ({"type": "result", "result": "x", "usage": [1]}, "usage is not an object"),
        ({"type": "result", "result": "x", "total_cost_usd": {}}, "total_cost_usd is not a number"),
    ],
)
def test_claude_stream_with_ill_typed_fields_fails_the_node(event, message):
    with pytest.raises(ParseError, match=message):
        parse_output(ParseSpec(format="claude"), lines(event))


def test_claude_stream_skips_lines_nested_too_deep():
    stream = b'{"x": ' + b"[" * 5000 + b"\n" + lines({"type": "result", "result": "done"})
    assert outputs(ParseSpec(format="claude"), stream)["result"] == "done"


def test_codex_item_that_is_not_an_object_fails_the_node():
    stream = lines({"type": "item.completed", "item": [1]}, {"type": "turn.completed"})
    with pytest.raises(ParseError, match="codex parser: item is not an object"):
        parse_output(ParseSpec(format="codex"), stream)
