"""Parsers that turn a node's stdout into `outputs` (a map conditions can read). Pure."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .schemas import violation
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
            outputs = _regex(re.compile(spec.pattern), text, spec.all)
        _check(spec, outputs, limit)
        return Parsed(outputs)
    if spec.format == "claude":
        return _claude(_json_lines(text))
    return _codex(_json_lines(text))


def _check(spec: ParseSpec, outputs: dict[str, Any], limit: int | None) -> None:
    """Outputs conform to their schema (resolved at planning) and fit the policy's cap."""
    if isinstance(spec.schema_, dict):
        problem = violation(spec.schema_, outputs)
        if problem:
            raise ParseError(problem)
    if limit is not None and len(json.dumps(outputs)) > limit:
        raise ParseError(f"outputs are larger than the policy's output limit ({limit} bytes)")


def _json_lines(text: str) -> list[dict[str, Any]]:
    events = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                events.append(value)
    return events


def _claude(events: list[dict[str, Any]]) -> Parsed:
    """Claude Code stream-json: the final `result` event carries the answer and usage."""
    result = next((e for e in reversed(events) if e.get("type") == "result"), None)
    if result is None:
        raise ParseError("claude parser: no result event in the stream")
    usage = result.get("usage") or {}
    tokens_in = sum(
        int(usage.get(key) or 0)
        for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    return Parsed(
        {
            "result": result.get("result", ""),
            "is_error": bool(result.get("is_error", False)),
            "num_turns": int(result.get("num_turns") or 0),
        },
        {
            "input_tokens": tokens_in,
            "output_tokens": int(usage.get("output_tokens") or 0),
            "cost_usd": float(result.get("total_cost_usd") or 0.0),
        },
    )


def _codex(events: list[dict[str, Any]]) -> Parsed:
    """Codex exec --json: agent messages, and usage on each turn.completed."""
    messages = [
        e["item"].get("text", "")
        for e in events
        if e.get("type") == "item.completed"
        and (e.get("item") or {}).get("type") == "agent_message"
    ]
    turns = [e for e in events if e.get("type") in ("turn.completed", "turn.failed")]
    errors = [e for e in events if e.get("type") in ("turn.failed", "error")]
    if not turns and not errors:
        raise ParseError("codex parser: no turn.completed event in the stream")
    usage = [e.get("usage") or {} for e in turns]
    return Parsed(
        {
            "result": messages[-1] if messages else "",
            "is_error": bool(errors),
            "num_turns": len(turns),
        },
        {
            "input_tokens": sum(int(u.get("input_tokens") or 0) for u in usage),
            "output_tokens": sum(int(u.get("output_tokens") or 0) for u in usage),
            "cost_usd": None,  # Codex reports tokens, not cost
        },
    )


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
