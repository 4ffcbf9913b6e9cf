"""Parsers that turn a node's stdout into `outputs` (a map conditions can read). Pure."""

from __future__ import annotations

import json
import re
from typing import Any

from .workflow import ParseSpec


class ParseError(Exception):
    """The output does not parse as its parser expects: the node fails with this reason."""


def parse_output(spec: ParseSpec, stdout: bytes, complete: bool = True) -> dict[str, Any]:
    if spec.format == "none":
        return {}
    text = stdout.decode("utf-8", "replace")
    if spec.format == "json":
        return _json(text, complete)
    if spec.format == "regex":
        assert spec.pattern is not None  # the model requires it
        return _regex(re.compile(spec.pattern), text, spec.all)
    raise ParseError(f"the {spec.format} parser is not available in this version")


def _json(text: str, complete: bool) -> dict[str, Any]:
    """The whole stdout as JSON, else its last line that is JSON."""
    candidates = [text] if complete else []
    candidates += [line for line in reversed(text.splitlines()) if line.lstrip()[:1] in "{["]
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if not isinstance(value, dict):
            raise ParseError(f"json parser: expected an object, got {type(value).__name__}")
        return value
    raise ParseError("json parser: stdout is not JSON and has no JSON line")


def _regex(pattern: re.Pattern[str], text: str, every: bool) -> dict[str, Any]:
    """Named groups become fields; with `all`, every match is one entry of `matches`."""
    if every:
        return {"matches": [match.groupdict() for match in pattern.finditer(text)]}
    match = pattern.search(text)
    if match is None:
        raise ParseError(f"regex parser: no match for {pattern.pattern!r}")
    return match.groupdict()
