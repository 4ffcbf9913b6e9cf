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

from .agents.streams import AgentStream, StreamProblem, reader_for
from .bounded.nesting import ConstantError, NestingError, load_json
from .bounded.patterns import compile_pattern

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
    return _agent(spec.format, stdout)


def _check(spec: ParseSpec, outputs: dict[str, Any], limit: int | None) -> None:
    """Outputs fit the policy's cap and conform to their schema (resolved at planning);
    the cap first, so a schema is never applied to more than the policy allows."""
    check_size(outputs, limit)
    if isinstance(spec.schema_, dict):
        from .schemas import violation  # jsonschema: only for a node with a schema

        problem = violation(spec.schema_, outputs)
        if problem:
            raise ParseError(problem)


def check_size(outputs: dict[str, Any], limit: int | None) -> None:
    """Outputs fit the policy's output limit (as JSON), or the node fails."""
    if limit is not None and len(json.dumps(outputs)) > limit:
        raise ParseError(f"outputs are larger than the policy's output limit ({limit} bytes)")


def _agent(fmt: str, stdout: bytes) -> Parsed:
    """An agent's whole stream, read by the same reader that follows it live."""
    reader = reader_for(fmt)
    assert reader is not None
    reader.feed(stdout)
    reader.finish()
    return agent_parsed(reader)


def agent_parsed(reader: AgentStream) -> Parsed:
    """Outputs and usage from what an agent's stream said; ParseError if it cannot say."""
    try:
        outputs = reader.outputs()
    except StreamProblem as problem:
        raise ParseError(f"{reader.format} parser: {problem}") from None
    return Parsed(outputs, reader.usage_json())


def _json(text: str, complete: bool) -> dict[str, Any]:
    """The whole stdout as JSON, else its last line that is JSON."""
    candidates = _json_candidates(text, complete)
    for candidate in candidates:
        try:
            value = load_json(candidate)
        except NestingError as error:
            raise ParseError(f"json parser: the value is {error}") from None
        except ConstantError as error:
            raise ParseError(f"json parser: the value {error}") from None
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
