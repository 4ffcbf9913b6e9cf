"""Redaction: every rendering a message can take on its way out, and secrets cut at the
edges of a bounded text. Each test attacks one form or one edge."""

import base64
import html
import io
import json
import logging
import xml.etree.ElementTree as ET
from urllib.parse import quote, quote_plus
from xml.sax.saxutils import escape as xml_escape

import pytest

from sandbox_orch import redaction
from sandbox_orch.capture import BoundedBuffer
from sandbox_orch.redaction import MIN_REDACTED, Redactor, remember, scrub, variants
from sandbox_orch.reports import escape_data, escape_property, markdown_cell, xml_chars
from sandbox_orch.text import one_line

# Both quote characters, a backslash, a newline, a tab, URL/XML/GitHub/Markdown
# specials and a non-ASCII letter: every escaping below changes this value.
NASTY = "k3y'with\"both\\and\nnew\tline%:,<&>|_*é-0123456789"
# Control characters (JSON \u001b, Python \x1b, dropped by XML), a line separator
# (kept by JSON, escaped by repr) and a single quote with no double quote.
CONTROL = "it's\x1b\x00\u2028-control-\x7f-é-0123456789"
PLAIN = "sk-ant-test-0123456789abcdef"
BOTH = "both'\"quotes\x1b-and-an-escape"  # repr, JSON and ascii all differ
VALUES = [NASTY, CONTROL, BOTH, PLAIN, "it's", 'say "hi" \\o/']
MARK = "[REDACTED:KEY]"


@pytest.fixture(autouse=True)
def _no_remembered_secrets():
    redaction.forget_all()
    yield
    redaction.forget_all()


def _python_double_quoted(text: str) -> str:
    return '"' + repr(text + "'\"")[1:-4].replace("\\'", "'").replace('"', '\\"') + '"'


def _et_attribute(text: str) -> str:
    return ET.tostring(ET.Element("e", {"a": text}), encoding="unicode")


RENDERINGS = {
    "raw": lambda v: v,
    "repr": repr,
    "repr-double-quoted": _python_double_quoted,
    "ascii": ascii,
    "repr-in-dict": lambda v: repr({"value": v}),
    "repr-of-bytes": lambda v: repr(v.encode()),
    "json": json.dumps,
    "json-unicode": lambda v: json.dumps(v, ensure_ascii=False),
    "json-of-repr": lambda v: json.dumps(f"reason: {v!r} is not valid"),
    "unicode_escape": lambda v: v.encode("unicode_escape").decode(),
    "one_line": one_line,
    "xml": xml_escape,
    "xml-quotes": lambda v: xml_escape(v, {'"': "&quot;", "'": "&apos;"}),
    "xml-attribute": _et_attribute,
    "html": html.escape,
    "github-data": escape_data,
    "github-property": escape_property,
    "markdown-cell": markdown_cell,
    "junit-chars": lambda v: xml_chars(v + "\x1b"),
    "lines-joined": lambda v: " ".join(v.splitlines()),
    "url": lambda v: quote(v, safe=""),
    "url-path": quote,
    "url-plus": quote_plus,
    "base64": lambda v: base64.b64encode(v.encode()).decode(),
    "base64-url": lambda v: base64.urlsafe_b64encode(b"x" + v.encode()).decode(),
}


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("rendering", [r for r in RENDERINGS if not r.startswith("base64")])
def test_every_rendering_is_redacted_whole(rendering, value):
    """Exactly: what is left is the rendering's own wrapping (quotes, tags), no residue."""
    render = RENDERINGS[rendering]
    redacted = Redactor({"KEY": value}).text(f"before {render(value)} after")
    placeholder = "PLACEHOLDER"
    expected = f"before {render(placeholder).replace(placeholder, MARK)} after"

    def same_quotes(text: str) -> str:  # repr chooses its quote by the content
        return text.replace(f'\\"{MARK}\\"', f"'{MARK}'").replace(f'"{MARK}"', f"'{MARK}'")

    assert same_quotes(redacted) == same_quotes(expected)


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("rendering", list(RENDERINGS))
def test_every_rendering_is_redacted(rendering, value):
    if rendering == "base64-url" and len(value) < 8:
        pytest.skip("a short value has too few base64 characters of its own")
    rendered = RENDERINGS[rendering](value)
    redacted = Redactor({"KEY": value}).text(f"before {rendered} after")
    assert MARK in redacted
    assert value not in redacted
    # Nothing of the rendered value survives beside the marker.
    assert redacted.startswith("before ") and redacted.endswith(" after")
    leftover = redacted.replace(MARK, "")
    for size in (len(value), 8):
        chunk = rendered[len(rendered) // 2 - size // 2 :][:size]
        if len(chunk) >= 8 and "before" not in chunk:
            assert chunk not in leftover


def test_renderings_really_differ_from_the_value():
    """The forms above must each be a different text, or the tests prove nothing."""
    distinct = {RENDERINGS[name](NASTY) for name in RENDERINGS}
    assert len(distinct) >= len(RENDERINGS) - 5
    assert NASTY not in RENDERINGS["repr"](NASTY)
    assert NASTY not in RENDERINGS["json"](NASTY)
    unicode_json = RENDERINGS["json-unicode"](CONTROL)[1:-1]
    assert all(unicode_json != RENDERINGS[r](CONTROL)[1:-1] for r in ("repr", "ascii"))


def test_short_values_and_their_forms_are_never_redacted():
    assert Redactor({"KEY": "ab"}).text("abc abd") == "abc abd"
    assert not Redactor({"KEY": "abc"})
    assert all(len(form) >= MIN_REDACTED for form in variants("a'b"))
    assert Redactor({"KEY": "abcd"}).text("xabcdx") == f"x{MARK}x"


def test_longest_form_wins_so_no_encoded_part_survives():
    value = "ab'cd\"ef"
    text = repr(value)
    redacted = Redactor({"KEY": value}).text(text)
    assert redacted in (MARK, f"'{MARK}'", f'"{MARK}"'), redacted


def test_two_secrets_each_get_their_own_marker():
    redactor = Redactor({"A": "first-secret", "B": "second-secret"})
    assert redactor.text("first-secret second-secret") == "[REDACTED:A] [REDACTED:B]"


def test_documents_and_events_are_redacted_keys_included():
    from dataclasses import dataclass

    redactor = Redactor({"KEY": NASTY})
    doc = {"a": [f"x{NASTY}", 3], repr(NASTY): {"b": (json.dumps(NASTY),)}, "n": None}
    out = redactor.document(doc)
    assert NASTY not in json.dumps(out) and "x" + MARK in out["a"][0]
    assert out["a"][1] == 3 and out["n"] is None

    @dataclass(frozen=True)
    class Event:
        node: str
        reason: str
        details: dict
        count: int

    event = redactor.event(Event("n", f"why {NASTY!r}", {"k": NASTY}, 2))
    assert NASTY not in event.reason and MARK in event.reason
    assert event.details == {"k": MARK} and event.count == 2 and event.node == "n"


def test_an_empty_redactor_changes_nothing():
    doc = {"a": ["x"]}
    redactor = Redactor()
    assert not redactor and redactor.document(doc) is doc
    assert redactor.cut("abcdef") == "abcdef"


# -- edges: a bound cut the text inside a secret ------------------------------------


@pytest.mark.parametrize("kept", [4, 5, len(PLAIN) - 1])
def test_a_text_starting_inside_a_secret_loses_the_fragment(kept):
    text = PLAIN[-kept:] + " and then the rest"
    assert Redactor({"KEY": PLAIN}).cut(text) == MARK + " and then the rest"


@pytest.mark.parametrize("kept", [4, 9, len(PLAIN) - 1])
def test_a_text_ending_inside_a_secret_loses_the_fragment(kept):
    text = "what came first " + PLAIN[:kept]
    assert Redactor({"KEY": PLAIN}).cut(text) == "what came first " + MARK


def test_fragments_shorter_than_the_minimum_are_kept():
    text = PLAIN[-(MIN_REDACTED - 1) :] + " middle " + PLAIN[: MIN_REDACTED - 1]
    assert Redactor({"KEY": PLAIN}).cut(text) == text


@pytest.mark.parametrize("size", [MIN_REDACTED, 12])
def test_a_text_wholly_inside_a_secret_is_redacted(size):
    assert Redactor({"KEY": PLAIN}).cut(PLAIN[5 : 5 + size]) == MARK


def test_fragments_of_an_encoded_form_are_redacted_at_the_edges():
    form = json.dumps(NASTY)[1:-1]
    text = form[-12:] + " middle " + form[:12]
    assert Redactor({"KEY": NASTY}).cut(text) == f"{MARK} middle {MARK}"


def test_text_redacts_only_whole_forms_and_cut_also_fragments():
    redactor = Redactor({"KEY": PLAIN})
    text = PLAIN[-10:] + " x"
    assert redactor.text(text) == text  # a fragment in an uncut text is left alone
    assert redactor.cut(text) == MARK + " x"


def test_both_sides_of_a_seam_are_edges():
    import re

    seam = re.compile(r"\n\[cut\]\n")
    text = f"head {PLAIN[:10]}\n[cut]\n{PLAIN[-10:]} mid {PLAIN[:8]}\n[cut]\n{PLAIN[-9:]} end"
    assert Redactor({"KEY": PLAIN}).cut(text, seam) == (
        f"head {MARK}\n[cut]\n{MARK} mid {MARK}\n[cut]\n{MARK} end"
    )


def test_replacement_characters_at_an_edge_do_not_hide_the_fragment():
    value = "ключ-секрет-значение"
    redactor = Redactor({"KEY": value})
    assert redactor.cut("\ufffd" + value[-9:] + " x") == "\ufffd" + MARK + " x"
    assert redactor.cut("x " + value[:9] + "\ufffd\ufffd") == "x " + MARK + "\ufffd\ufffd"


def _buffer(*chunks: bytes, limit: int = 1 << 20) -> BoundedBuffer:
    buffer = BoundedBuffer(limit)
    for chunk in chunks:
        buffer.write(chunk)
    return buffer


def test_a_tail_that_starts_inside_a_secret_keeps_none_of_it():
    """The red team's case: the last 4096 characters began 3 characters into a secret."""
    secret = "s3cr3t-" + "v" * 40 + "-end"
    buffer = _buffer(b"x" * 5000, secret.encode(), b"y" * (4096 - len(secret) + 3))
    tail = buffer.tail(4096, Redactor({"KEY": secret}))
    assert secret[3:] not in tail and secret[10:20] not in tail
    assert buffer.tail(4096).startswith(secret[3:])  # without a redactor: the old cut


def test_a_short_tail_cut_inside_a_secret():
    secret = PLAIN
    buffer = _buffer(b"a" * 100, secret.encode(), b"b" * 10)
    tail = buffer.tail(20, Redactor({"KEY": secret}))
    assert secret[-10:] not in tail and "b" * 10 in tail


def test_a_dropped_middle_cuts_secrets_on_both_sides():
    secret = PLAIN
    # head holds 64 bytes ending inside the secret; the ring starts inside another copy
    head = b"h" * (64 - 12) + secret.encode()[:12]
    flood = b"m" * 1000
    ring_start = secret.encode()[-15:]
    buffer = _buffer(head, b"z" * 10, flood, ring_start + b"t" * (64 - 15), limit=128)
    assert buffer.dropped
    raw = buffer.tail(4096)
    assert secret[:12] in raw and secret[-15:] in raw  # the attack without redaction
    tail = buffer.tail(4096, Redactor({"KEY": secret}))
    assert secret[:12] not in tail and secret[-15:] not in tail
    assert tail.count(MARK) == 2 and "bytes of output dropped" in tail


def test_a_secret_across_chunks_and_whole_in_the_tail_is_redacted():
    buffer = _buffer(b"out: ", PLAIN[:5].encode(), PLAIN[5:].encode(), b"\n")
    assert buffer.tail(4096, Redactor({"KEY": PLAIN})) == f"out: {MARK}\n"


# -- sinks: the rendered text of every way out is scrubbed --------------------------


def test_scrub_knows_every_secret_this_process_has_read():
    assert scrub(f"x {PLAIN}") == f"x {PLAIN}"
    remember("KEY", PLAIN)
    assert scrub(f"x {PLAIN}") == f"x {MARK}"
    assert scrub(json.dumps(repr(PLAIN))) == json.dumps(repr(MARK)).replace("'", "'")


def test_a_secret_store_remembers_what_it_reads(monkeypatch):
    from sandbox_orch.policy import SecretGrant
    from sandbox_orch.secrets import SecretStore

    monkeypatch.setenv("SO_TEST_KEY", NASTY)
    store = SecretStore(
        {"KEY": SecretGrant("KEY", "SO_TEST_KEY", None, ("shell",), ())}, Redactor()
    )
    assert store.value("KEY") == NASTY
    assert store.redactor.text(NASTY) == MARK
    assert scrub(repr(NASTY)) == f"'{MARK}'"


def test_files_we_write_are_scrubbed(tmp_path):
    from sandbox_orch.store import save_results, write_text

    remember("KEY", NASTY)
    write_text(tmp_path / "report.xml", _et_attribute(NASTY))
    assert (tmp_path / "report.xml").read_text() == f'<e a="{MARK}" />'
    path = save_results("r1", {"reason": f"{NASTY!r}"}, tmp_path / "extra.json")
    for written in (path, tmp_path / "extra.json"):
        text = written.read_text()
        assert MARK in text and json.dumps(repr(NASTY))[1:-1] not in text


def test_event_lines_and_plain_lines_are_scrubbed():
    from datetime import UTC, datetime

    from sandbox_orch.events import NodeFinished
    from sandbox_orch.view import JsonView, PlainView

    remember("KEY", NASTY)
    event = NodeFinished(
        node="n", status="failed", attempt=1, at=datetime.now(UTC), exit_code=1,
        duration_s=0.1, reason=f"bad: {NASTY!r}", retrying=False,
    )  # fmt: skip
    for view in (JsonView, PlainView):
        out = io.StringIO()
        view(out)(event)
        assert MARK in out.getvalue() and "k3y" not in out.getvalue(), view


def test_run_store_bytes_are_scrubbed(tmp_path, monkeypatch):
    from sandbox_orch.runstore import RunStore

    monkeypatch.setenv("SANDBOX_ORCH_HOME", str(tmp_path))
    remember("KEY", NASTY)
    store = RunStore.open()
    store.start_run(
        "r1", {"name": "w", "path": "w.yaml", "sha256": "0"}, {"name": "p"}, "2026-01-01T00:00:00Z"
    )
    store.add_events("r1", [{"event": "node_finished", "reason": repr(NASTY)}])
    store.finish_run(
        {"run_id": "r1", "status": "failed",
         "nodes": {"n": {"status": "failed", "reason": NASTY, "stdout_tail": repr(NASTY)}}}
    )  # fmt: skip
    store.close()
    data = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert b"k3y" not in data and MARK.encode() in data


@pytest.fixture
def plain_log_records():
    """The standard record factory during the test, whatever an earlier test installed."""
    before = logging.getLogRecordFactory()
    logging.setLogRecordFactory(logging.LogRecord)
    yield
    logging.setLogRecordFactory(before)


def test_log_records_are_scrubbed(plain_log_records):
    remember("KEY", NASTY)
    redaction.scrub_log_records()
    installed = logging.getLogRecordFactory()
    assert installed is not logging.LogRecord
    redaction.scrub_log_records()
    assert logging.getLogRecordFactory() is installed  # idempotent: one wrapper, not two
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    log = logging.getLogger("sandbox_orch.test_redaction")
    log.addHandler(handler)
    try:
        log.warning("engine said %r", NASTY)
    finally:
        log.removeHandler(handler)
    assert out.getvalue() == f"engine said '{MARK}'\n"


def test_errors_on_stderr_are_scrubbed():
    from click.testing import CliRunner

    from sandbox_orch.cli import exits_with_contract_codes
    from sandbox_orch.errors import InfrastructureError

    remember("KEY", NASTY)

    @exits_with_contract_codes
    def failing() -> None:
        raise InfrastructureError(f"engine error: {NASTY!r}")

    @exits_with_contract_codes
    def crashing() -> None:
        raise RuntimeError(json.dumps(NASTY))

    import click

    for function in (failing, crashing):
        result = CliRunner().invoke(click.command()(function))
        assert result.exit_code == 3
        assert MARK in result.output and "k3y" not in result.output


def test_a_log_record_with_a_bad_format_is_left_to_the_handler(plain_log_records):
    remember("KEY", NASTY)
    redaction.scrub_log_records()
    record = logging.getLogRecordFactory()("n", logging.WARNING, "f.py", 1, "%d", ("x",), None)
    assert record.msg == "%d" and record.args == ("x",)
    assert record.name == "n" and record.lineno == 1
    # The factory takes what LogRecord takes, by keyword too.
    named = logging.getLogRecordFactory()(
        "n", logging.WARNING, "f.py", 1, "key %r", (NASTY,), None, func="f", sinfo=None
    )
    assert named.getMessage() == f"key '{MARK}'" and named.funcName == "f"


@pytest.mark.parametrize("prefix", [b"", b"x", b"xy", b"Basic "])
@pytest.mark.parametrize("suffix", [b"!", b"!!", b"!!!"])
def test_base64_keeps_only_the_groups_shared_with_its_neighbours(prefix, suffix):
    """Inside a longer base64 text, exactly the characters that encode only the value's
    bits are redacted: before them the ones that share bits with what precedes (a char
    is 6 bits), after them the group (4 chars, 3 bytes) shared with what follows."""
    encoded = base64.b64encode(prefix + PLAIN.encode() + suffix).decode()
    first = -(-len(prefix) * 8 // 6)
    last = (len(prefix) + len(PLAIN)) // 3 * 4
    redacted = Redactor({"KEY": PLAIN}).text(encoded)
    assert redacted == encoded[:first] + MARK + encoded[last:]


def test_a_whole_base64_form_leaves_nothing_behind():
    for value in (PLAIN, PLAIN + "x", PLAIN + "xy"):
        assert Redactor({"KEY": value}).text(base64.b64encode(value.encode()).decode()) == MARK


def test_scrubbed_json_stays_valid_json():
    """A secret starting with an escape letter can match inside an escape sequence of
    the JSON text ("\\n" then the rest): the file must still parse, and the real secret
    elsewhere in it must still go."""
    value = "new-secret-value"
    remember("KEY", value)
    document = {"a": "line\new-secret-value", "b": [value], "c": 1}
    text = redaction.scrub_json(document, indent=2)
    assert text == json.dumps({"a": "line\new-secret-value", "b": [MARK], "c": 1}, indent=2)
    assert redaction.scrub_json({"b": value}) == json.dumps({"b": MARK})
    assert redaction.scrub_json({"b": "é"}, ensure_ascii=False) == '{"b": "é"}'
    assert redaction.scrub_json({"b": [value]}, indent=1) == json.dumps({"b": [MARK]}, indent=1)
