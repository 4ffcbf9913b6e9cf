"""Parsers that turn a node's stdout into `outputs` (a map conditions can read). Pure.

Stdout is untrusted (agents' streams too), so every parser is bounded: JSON values at most
MAX_JSON_DEPTH deep, regular expressions on RE2 (linear time), `all: true` stops adding
matches past the output limit, and malformed agent events fail the node, never the run.
The run calls this in its evaluation worker, under a deadline (bounded/evaluator.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .bounded.nesting import NestingError, load_json
from .bounded.patterns import compile_pattern
from .schemas import violation

if TYPE_CHECKING:  # the evaluation worker parses without importing pydantic's models
    from .workflow import ParseSpec


class ParseError(Exception):
    """The output does not parse as its parser expects: the node fails with this reason."""


@dataclass(frozen=True)
class Parsed:
    outputs: dict[str, Any]
    usage: dict[str, Any] | None = None  # agent runtimes: tokens and cost


def parse_output(
    spec: ParseSpec, stdout: bytes, complete: bool = True, limit: int | None = None
) -> Parsed:
    if spec.format == "none":
        return Parsed({})
    text = stdout.decode("utf-8", "replace")
    if spec.format in ("json", "regex"):
        if spec.format == "json":
            outputs = _json(text, complete)
        else:
            assert spec.pattern is not None  # the model requires it
            outputs = _regex(spec.pattern, text, spec.all, limit)
        _check(spec, outputs, limit)
        return Parsed(outputs)
    if spec.format == "claude":
        return _claude(_json_lines(text))
    return _codex(_json_lines(text))


def _check(spec: ParseSpec, outputs: dict[str, Any], limit: int | None) -> None:
    """Outputs fit the policy's cap and conform to their schema (resolved at planning);
    the cap first, so a schema is never applied to more than the policy allows."""
    if limit is not None and len(json.dumps(outputs)) > limit:
        raise ParseError(f"outputs are larger than the policy's output limit ({limit} bytes)")
    if isinstance(spec.schema_, dict):
        problem = violation(spec.schema_, outputs)
        if problem:
            raise ParseError(problem)


def _json_lines(text: str) -> list[dict[str, Any]]:
    """The stream's JSON objects; other lines (and ones nested too deep) are skipped."""
    events = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                value = load_json(line)
            except ValueError:  # NestingError too
                continue
            if isinstance(value, dict):
                events.append(value)
    return events


def _claude(events: list[dict[str, Any]]) -> Parsed:
    """Claude Code stream-json: the final `result` event carries the answer and usage."""
    result = next((e for e in reversed(events) if e.get("type") == "result"), None)
    if result is None:
        raise ParseError("claude parser: no result event in the stream")
    usage = _mapping(result.get("usage"), "claude parser: usage")
    tokens_in = sum(
        _count(usage.get(key), f"claude parser: usage.{key}")
        for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    return Parsed(
        {
            "result": _text(result.get("result", ""), "claude parser: result"),
            "is_error": bool(result.get("is_error", False)),
            "num_turns": _count(result.get("num_turns"), "claude parser: num_turns"),
        },
        {
            "input_tokens": tokens_in,
            "output_tokens": _count(usage.get("output_tokens"), "claude parser: output_tokens"),
            "cost_usd": _cost(result.get("total_cost_usd")),
        },
    )


def _codex(events: list[dict[str, Any]]) -> Parsed:
    """Codex exec --json: agent messages, and usage on each turn.completed."""
    items = [_mapping(e.get("item"), "codex parser: item") for e in events
             if e.get("type") == "item.completed"]  # fmt: skip
    messages = [i.get("text", "") for i in items if i.get("type") == "agent_message"]
    turns = [e for e in events if e.get("type") in ("turn.completed", "turn.failed")]
    errors = [e for e in events if e.get("type") in ("turn.failed", "error")]
    if not turns and not errors:
        raise ParseError("codex parser: no turn.completed event in the stream")
    usage = [_mapping(e.get("usage"), "codex parser: usage") for e in turns]
    return Parsed(
        {
            "result": _text(messages[-1], "codex parser: message") if messages else "",
            "is_error": bool(errors),
            "num_turns": len(turns),
        },
        {
            "input_tokens": sum(
                _count(u.get("input_tokens"), "codex parser: tokens") for u in usage
            ),
            "output_tokens": sum(
                _count(u.get("output_tokens"), "codex parser: tokens") for u in usage
            ),
            "cost_usd": None,  # Codex reports tokens, not cost
        },
    )


# An agent's stream is untrusted: a field of the wrong type fails the node with its name
# (an int() of a 5,000-digit string or of a list would otherwise be an internal error).


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ParseError(f"{what} is not an object")
    return value


def _count(value: Any, what: str) -> int:
    if value is None or value is False:
        return 0
    if isinstance(value, int) and 0 <= value < 2**63:
        return int(value)
    raise ParseError(f"{what} is not a count")


def _cost(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    raise ParseError("claude parser: total_cost_usd is not a number")


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ParseError(f"{what} is not text")
    return value


def _json(text: str, complete: bool) -> dict[str, Any]:
    """The whole stdout as JSON, else its last line that is JSON."""
    candidates = _json_candidates(text, complete)
    for candidate in candidates:
        try:
            value = load_json(candidate)
        except NestingError as error:
            raise ParseError(f"json parser: the value is {error}") from None
        except ValueError:
            continue
        if not isinstance(value, dict):
            raise ParseError(f"json parser: expected an object, got {type(value).__name__}")
        return value
    raise ParseError("json parser: stdout is not JSON and has no JSON line")


def _json_candidates(text: str, complete: bool) -> Iterator[str]:
    """The whole text (if complete), then its lines that may be JSON, from the last."""
    if complete:
        yield text
    for line in reversed(text.splitlines()):
        if line.lstrip()[:1] in ("{", "["):
            yield line


def _regex(pattern: str, text: str, every: bool, limit: int | None) -> dict[str, Any]:
    """Named groups become fields; with `all`, every match is one entry of `matches`.

    RE2 runs on the UTF-8 bytes (the decoded text, so invalid bytes are U+FFFD as
    before): it skips the wrapper's per-match translation of byte offsets to characters.
    """
    compiled = compile_pattern(pattern)
    names = sorted(compiled.groupindex.items(), key=lambda item: item[1])
    data = text.encode()
    if not every:
        match = compiled.search(data)
        if match is None:
            raise ParseError(f"regex parser: no match for {pattern!r}")
        return _groups(match, names)
    matches, size = [], 0
    for match in compiled.finditer(data):
        fields = _groups(match, names)
        # What this entry adds to the outputs' JSON, near enough to stop early.
        size += 4 + sum(len(k) + len(v or "") + 6 for k, v in fields.items())
        if limit is not None and size > limit:
            raise ParseError(f"outputs are larger than the policy's output limit ({limit} bytes)")
        matches.append(fields)
    return {"matches": matches}


def _groups(match: Any, names: list[tuple[str, int]]) -> dict[str, str | None]:
    fields: dict[str, str | None] = {}
    for name, index in names:
        value = match.group(index)
        fields[name] = None if value is None else value.decode("utf-8", "replace")
    return fields
