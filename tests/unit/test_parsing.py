"""Output parsers: json (whole, else last JSON line), regex (named groups, all)."""

import pytest

from sandbox_orch.parsing import ParseError, parse_output
from sandbox_orch.workflow import ParseSpec


def test_none_gives_no_outputs():
    assert parse_output(ParseSpec(), b'{"a": 1}') == {}


def test_json_whole_stdout():
    assert parse_output(ParseSpec(format="json"), b'{\n "a": [1, 2]\n}\n') == {"a": [1, 2]}


def test_json_last_json_line_among_logs():
    out = b'starting\n{"stage": 1}\nprogress...\n{"coverage": 91}\ndone\n'
    assert parse_output(ParseSpec(format="json"), out) == {"coverage": 91}


def test_json_truncated_output_uses_the_tail():
    out = b'{"big": "xxxx\n[sandbox-orch: 10 bytes of output dropped]\n{"ok": true}\n'
    assert parse_output(ParseSpec(format="json"), out, complete=False) == {"ok": True}


@pytest.mark.parametrize("out", [b"plain text", b"[1, 2]", b""])
def test_json_without_an_object_fails(out):
    with pytest.raises(ParseError):
        parse_output(ParseSpec(format="json"), out)


def test_regex_named_groups_of_the_first_match():
    spec = ParseSpec(format="regex", pattern=r"(?P<file>[^:\s]+):(?P<line>\d+)")
    assert parse_output(spec, b"src/a.py:12: x\nsrc/b.py:3: y\n") == {
        "file": "src/a.py",
        "line": "12",
    }


def test_regex_all_matches():
    spec = ParseSpec(format="regex", pattern=r"(?P<file>[^:\s]+):(?P<line>\d+)", all=True)
    assert parse_output(spec, b"a:1\nb:2\n") == {
        "matches": [{"file": "a", "line": "1"}, {"file": "b", "line": "2"}]
    }
    assert parse_output(spec, b"nothing") == {"matches": []}


def test_regex_without_a_match_fails():
    with pytest.raises(ParseError, match="no match"):
        parse_output(ParseSpec(format="regex", pattern=r"(?P<x>\d+)"), b"abc")
