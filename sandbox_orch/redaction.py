"""Redaction: a secret's value, in every form it can take on its way out, replaced by a
marker naming the secret.

Two layers, because each misses what the other catches:
- the run's Redactor redacts its documents and events before anything renders or cuts
  them (a cut of redacted text can only cut a marker);
- every final sink (results and report files, event lines, terminal and CI lines, the
  run store, log records, stderr) passes its rendered text through `scrub`, which knows
  every secret this process has read, whatever run read it.

A form is the value after the encodings a program or a sink applies: Python repr (either
quote style), JSON, unicode_escape, XML/HTML, GitHub's %-escaping, Markdown cells, URL
and base64 encodings, and any two of these in turn (a repr inside a JSON file).

A text cut by a bound (an output tail, a dropped middle) can start or end inside a
secret: `Redactor.cut` also redacts a prefix or suffix of a form at each edge.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import html
import json
import logging
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, quote_plus

from .reports import escape_data, escape_property, markdown_cell, xml_chars
from .text import one_line

MIN_REDACTED = 4  # shorter values (and fragments) would redact ordinary text everywhere

# What XML serializers write for quotes and line breaks in attributes (ElementTree: no
# &apos;; others: both).
_XML_ATTRIBUTE = {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#09;"}
_XML_QUOTES = {'"': "&quot;", "'": "&apos;"}
_LINE_BREAK = re.compile(r"\r\n|[\r\n\u0085\u2028\u2029]")
_REPLACEMENT = "\ufffd"  # what a byte cut inside a UTF-8 character decodes to


def _python_bodies(text: str) -> set[str]:
    """The inside of Python's repr in either quote style, and of ascii()."""
    # With both quote characters present, repr quotes with ' and escapes it; the three
    # characters appended force that style and are cut off again.
    single = repr(text + "'\"")[1:-4]
    # repr's choice when the text has ' and no " (and other programs' double quotes).
    double = single.replace("\\'", "'").replace('"', '\\"')
    forms = {
        single,
        double,
        ascii(text + "'\"")[1:-4],
    }
    # A bytes value printed as such, in either quote style.
    as_bytes = repr(text.encode() + b"'\"")[2:-4]
    forms |= {as_bytes, as_bytes.replace("\\'", "'")}
    return forms


def _renderings(text: str) -> set[str]:
    """`text` after one encoding that a program or one of our sinks may apply."""
    # Imported here: xml.sax imports urllib.request, which every command would pay at its
    # start (the command line's first act is scrub_log_records, from this module).
    from xml.sax.saxutils import escape as xml_escape

    forms = _python_bodies(text)
    forms |= {
        json.dumps(text)[1:-1],
        json.dumps(text, ensure_ascii=False)[1:-1],
        text.encode("unicode_escape").decode(),
        one_line(text),
        xml_escape(text),
        xml_escape(text, _XML_ATTRIBUTE),
        xml_escape(text, _XML_QUOTES),
        html.escape(text),
        escape_data(text),
        escape_property(text),
        markdown_cell(text),
        xml_chars(text),  # JUnit drops what XML cannot carry
        " ".join(_LINE_BREAK.split(text)),  # table cells and annotations join lines
        quote(text, safe=""),
        quote(text),
        quote_plus(text),
    }
    return forms


def _base64_forms(raw: bytes) -> set[str]:
    forms = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        forms.add(encode(raw).decode())
        for offset in range(3):
            # Inside a longer base64 text the value may start at any byte alignment;
            # keep the characters that encode only its own bytes: skip the group shared
            # with what comes before, stop before the group shared with what follows.
            encoded = encode(b"\0" * offset + raw).decode()
            start = -(-offset * 4 // 3)
            end = (offset + len(raw)) // 3 * 4
            forms.add(encoded[start:end])
    return forms


def variants(value: str) -> set[str]:
    """The value as it may appear when encoded once or twice before it is printed."""
    first = {value} | _renderings(value)
    forms = set(first)
    for form in first:
        forms |= _renderings(form)
    forms |= _base64_forms(value.encode())
    return {form for form in forms if len(form) >= MIN_REDACTED}


class Redactor:
    def __init__(self, secrets: Mapping[str, str] | None = None) -> None:
        self._replacements: list[tuple[str, str]] = []
        # Fragments a cut may leave at its edges: form prefixes (before a cut) and
        # suffixes (after one), each with its marker.
        self._prefixes: dict[str, str] = {}
        self._suffixes: dict[str, str] = {}
        self._longest = 0
        self._lock = threading.Lock()  # the process-wide one is shared by threads
        for name, value in (secrets or {}).items():
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        if len(value) < MIN_REDACTED:
            return
        marker = f"[REDACTED:{name}]"
        forms = variants(value)
        with self._lock:
            known = {form for form, _ in self._replacements}
            pairs = [(form, marker) for form in forms if form not in known]
            # Longest first: a form that contains another is replaced whole.
            self._replacements = sorted(self._replacements + pairs, key=lambda p: -len(p[0]))
            for form in forms:
                for size in range(MIN_REDACTED, len(form)):
                    self._prefixes.setdefault(form[:size], marker)
                    self._suffixes.setdefault(form[-size:], marker)
                self._longest = max(self._longest, len(form))

    def __bool__(self) -> bool:
        return bool(self._replacements)

    def text(self, text: str) -> str:
        for form, marker in self._replacements:
            if form in text:
                text = text.replace(form, marker)
        return text

    def cut(self, text: str, seams: re.Pattern[str] | None = None) -> str:
        """A text that a bound cut (at its start, its end, and at each `seams` match,
        such as the marker of a dropped middle): whole forms, then any fragment of a
        form at least MIN_REDACTED long at each edge."""
        if not self._replacements:
            return text
        if seams is None:
            return self._edges(self.text(text))
        pieces, start = [], 0
        for seam in seams.finditer(text):
            pieces += [self._edges(self.text(text[start : seam.start()])), seam.group()]
            start = seam.end()
        pieces.append(self._edges(self.text(text[start:])))
        return "".join(pieces)

    def _edges(self, text: str) -> str:
        # A byte cut inside a multi-byte character leaves replacement characters at the
        # edge; the fragment is what lies inside them.
        body = text.lstrip(_REPLACEMENT)
        lead = text[: len(text) - len(body)]
        core = body.rstrip(_REPLACEMENT)
        trail = body[len(core) :]
        inside = self._inside(core)
        if inside:  # cut on both sides: a middle part of a secret
            return lead + inside + trail
        core = self._at_start(core)
        core = self._at_end(core)
        return lead + core + trail

    def _inside(self, text: str) -> str | None:
        if MIN_REDACTED <= len(text) < self._longest:
            for form, marker in self._replacements:
                if text in form:
                    return marker
        return None

    def _at_start(self, text: str) -> str:
        for size in range(min(self._longest, len(text)), MIN_REDACTED - 1, -1):
            marker = self._suffixes.get(text[:size])
            if marker:
                return marker + text[size:]
        return text

    def _at_end(self, text: str) -> str:
        for size in range(min(self._longest, len(text)), MIN_REDACTED - 1, -1):
            marker = self._prefixes.get(text[-size:])
            if marker:
                return text[:-size] + marker
        return text

    def event(self, event: Any) -> Any:
        """A (dataclass) event with its strings redacted."""
        changes = {k: self.document(v) for k, v in vars(event).items() if isinstance(v, str | dict)}
        return dataclasses.replace(event, **changes)

    def document(self, value: Any) -> Any:
        """Every string in a JSON-like document, keys included."""
        if not self._replacements:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.document(k): self.document(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.document(item) for item in value]
        return value


# Every secret this process has read: the sinks' last line of defence, which sees the
# rendered text of any run (and of log records and errors that belong to none).
_SEEN = Redactor()


def remember(name: str, value: str) -> None:
    """From now on, `scrub` redacts `value` (in all its forms) wherever it goes out."""
    _SEEN.add(name, value)


def scrub(text: str) -> str:
    """`text` as it leaves the process: every secret read so far redacted."""
    return _SEEN.text(text) if _SEEN else text


def scrub_json(document: Any, **dump: Any) -> str:
    """`document` as JSON text, scrubbed, and still valid JSON: a match that began inside
    an escape sequence (a secret starting "n..." after a `\\`) would break the text, so
    then every decoded string is scrubbed instead and the document dumped again."""
    text = json.dumps(document, **dump)
    scrubbed = scrub(text)
    if scrubbed == text:
        return text
    try:
        json.loads(scrubbed)
    except ValueError:
        return json.dumps(_SEEN.document(document), **dump)
    return scrubbed


def scrub_log_records() -> None:
    """Every log record's message (arguments filled in) scrubbed when it is made, so no
    handler, ours or a library's, can print a secret."""
    make = logging.getLogRecordFactory()
    if getattr(make, "scrubs", False):
        return

    def scrubbed(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        if _SEEN:
            with contextlib.suppress(Exception):  # a bad format stays the handler's problem
                record.msg, record.args = scrub(record.getMessage()), None
        return record

    scrubbed.scrubs = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(scrubbed)


def forget_all() -> None:
    """Tests only: start from a process that has read no secret."""
    global _SEEN
    _SEEN = Redactor()
