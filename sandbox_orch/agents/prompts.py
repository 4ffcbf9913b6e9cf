"""Prompts built from earlier results: `${{ EXPR }}` in an agent node's `prompt`.

    prompt: "Implement this plan:\\n${{ nodes.plan.outputs.result }}"

Each EXPR is CEL, compiled when the workflow is validated with exactly the checks and
static cost limits of a `when` (conditions.py): it may read only the node's needs and
their ancestors, and may not call a status function. At launch, once the needs have
finished, the prompt is rendered in the run's evaluation worker (bounded in time and
memory; the scheduler waits on it as on any task), redacted, and put into the agent's
argv in place of the template. `$${{` writes a literal `${{`.

A value becomes text by one rule: a string as it is; a number or boolean as CEL's
`string()` writes it; a list or map as JSON. Anything else (null, bytes, a type) fails
the node, and so does a field a need does not have: a prompt is never silently emptied.

The whole prompt as launched is at most the policy's `limits.prompt` bytes. Over it, the
node fails before launch; it is never cut: a cut plan is a different plan (its last
steps, or the "do not" that ended it, silently gone), and the spend would go on
instructions nobody wrote.

Pure, and free of pydantic: the evaluation worker imports it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..bounded.limits import MAX_PROMPT_EXPRESSIONS
from ..conditions import (
    STATUS_FUNCTIONS,
    Condition,
    ConditionError,
    compile_condition,
    evaluate_value,
)

OPEN, CLOSE, ESCAPE = "${{", "}}", "$${{"
_SHOWN = 60  # characters of an expression quoted in a message


class PromptError(Exception):
    """A prompt that cannot be compiled (exit 2) or rendered (the node fails)."""


@dataclass(frozen=True)
class Expression:
    source: str  # stripped of the spaces inside ${{ }}
    number: int  # 1-based, for messages


Part = str | Expression


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt with at least one expression, as planned: what is rendered at launch."""

    source: str  # as written: shown by `plan`, sent to the worker
    slot: int  # the prompt's index in the node's argv
    references: frozenset[str] = frozenset()  # nodes its expressions name
    whole_nodes: bool = False  # an expression uses `nodes` as a whole

    def reads(self, visible: Iterable[str]) -> frozenset[str]:
        """The nodes whose views the worker needs (all visible ones for `nodes` whole)."""
        return frozenset(visible) if self.whole_nodes else self.references


def split(source: str) -> list[Part]:
    """Literal text and expressions, in order; PromptError for an unclosed or empty
    `${{`, or too many expressions."""
    parts: list[Part] = []
    text: list[str] = []
    start = 0
    while (opened := source.find(OPEN, start)) >= 0:
        if opened > start and source[opened - 1] == "$":  # `$${{`: a literal `${{`
            text.append(source[start : opened - 1] + OPEN)
            start = opened + len(OPEN)
            continue
        text.append(source[start:opened])
        closed = _closing(source, opened + len(OPEN))
        if closed is None:
            raise PromptError(
                f"`{OPEN}` at character {opened + 1} is not closed with `{CLOSE}` "
                f"(write `{ESCAPE}` for a literal `{OPEN}`)"
            )
        expression = source[opened + len(OPEN) : closed].strip()
        if not expression:
            raise PromptError(f"`{OPEN} {CLOSE}` at character {opened + 1} is empty")
        if "".join(text):
            parts.append("".join(text))
        text = []
        number = sum(isinstance(p, Expression) for p in parts) + 1
        if number > MAX_PROMPT_EXPRESSIONS:
            raise PromptError(f"has more than {MAX_PROMPT_EXPRESSIONS} `{OPEN} ... {CLOSE}`")
        parts.append(Expression(expression, number))
        start = closed + len(CLOSE)
    text.append(source[start:])
    if "".join(text):
        parts.append("".join(text))
    return parts


def literal(parts: list[Part]) -> str | None:
    """The prompt's text if it has no expression (escapes undone), else None."""
    if any(isinstance(p, Expression) for p in parts):
        return None
    return "".join(p for p in parts if isinstance(p, str))


def literal_size(parts: list[Part]) -> int:
    """UTF-8 bytes of the text around the expressions: the least the prompt will be."""
    return sum(len(p.encode()) for p in parts if isinstance(p, str))


def escape(text: str) -> str:
    """`text` as a prompt that renders to itself (`single --prompt` is literal)."""
    return text.replace(OPEN, ESCAPE)


def compile_template(source: str, slot: int, visible: set[str]) -> PromptTemplate:
    """Check every expression as a `when` is checked, against what the node may see."""
    names: set[str] = set()
    whole = False
    for part in split(source):
        if isinstance(part, Expression):
            compiled = _compile(part, visible)
            names |= compiled.references
            whole = whole or compiled.whole_nodes
    return PromptTemplate(source, slot, frozenset(names), whole)


def render(source: str, nodes: Mapping[str, Mapping[str, Any]], limit: int) -> str:
    """The prompt with each expression's value in its place (in the evaluation worker).
    `nodes`: the views of what it reads (scheduler.NodeRecord.view)."""
    pieces: list[str] = []
    size = 0
    for part in split(source):
        piece = _value_text(part, nodes) if isinstance(part, Expression) else part
        size += len(piece.encode("utf-8", "surrogatepass"))
        if size > limit:
            raise PromptError(too_large(limit))
        pieces.append(piece)
    text = "".join(pieces)
    check_launchable(text, limit)
    return text


def check_launchable(text: str, limit: int) -> None:
    """PromptError unless `text` can be one argument of a command line, within `limit`."""
    if "\x00" in text:
        raise PromptError("contains a NUL character, which no command-line argument can hold")
    try:
        size = len(text.encode())
    except UnicodeEncodeError:
        raise PromptError("is not valid Unicode text (a lone surrogate)") from None
    if size > limit:
        raise PromptError(too_large(limit))


def too_large(limit: int) -> str:
    return (
        f"is larger than the policy's prompt limit ({limit} bytes); it is never cut: "
        "read a smaller field, or raise `limits.prompt` in the policy"
    )


def launch_argv(argv: tuple[str, ...], template: PromptTemplate, text: str) -> tuple[str, ...]:
    """The node's argv with the rendered prompt in the template's place."""
    return (*argv[: template.slot], text, *argv[template.slot + 1 :])


def _compile(part: Expression, visible: set[str]) -> Condition:
    try:
        compiled = compile_condition(part.source, visible)
    except ConditionError as error:
        raise PromptError(f"{_name(part)}: {error}") from None
    if compiled.status_aware:
        functions = ", ".join(f"{f}()" for f in sorted(STATUS_FUNCTIONS))
        raise PromptError(f"{_name(part)}: {functions} are for `when`, not for prompts")
    return compiled


def _value_text(part: Expression, nodes: Mapping[str, Mapping[str, Any]]) -> str:
    compiled = _compile(part, set(nodes))
    try:
        value = evaluate_value(compiled, dict(nodes))  # type: ignore[arg-type]
    except ConditionError as error:
        raise PromptError(f"{_name(part)}: {error}{_unfinished(compiled, nodes)}") from None
    try:
        return as_text(value)
    except ValueError as error:
        raise PromptError(f"{_name(part)}: {error}{_unfinished(compiled, nodes)}") from None


def as_text(value: Any) -> str:
    """The one rule from a CEL value to prompt text (see the module's docstring)."""
    from celpy import celtypes  # here: a workflow without prompts is checked without celpy

    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool | celtypes.BoolType):
        return "true" if value else "false"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(celtypes.StringType(value))
    if isinstance(value, list | dict):
        try:
            return json.dumps(_plain(value), ensure_ascii=False, allow_nan=False)
        except ValueError:
            raise ValueError("gives a list or map that is not JSON (NaN or infinity)") from None
    if value is None:
        raise ValueError("gives null, not text (use has() to give something else)")
    raise ValueError(f"gives a {_kind(value)}, which has no text form (give a string)")


def _plain(value: Any) -> Any:
    """A CEL list or map as plain JSON values; ValueError for what JSON cannot hold."""
    from celpy import celtypes

    if isinstance(value, dict):
        return {str(k) if isinstance(k, str) else as_text(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, bool | celtypes.BoolType):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("not finite")
        return float(value)
    if value is None or isinstance(value, str):
        return None if value is None else str(value)
    raise ValueError(f"gives a list or map holding a {_kind(value)}, which JSON cannot hold")


def _kind(value: Any) -> str:
    return type(value).__name__.removesuffix("Type").lower() or "value"


def _unfinished(compiled: Condition, nodes: Mapping[str, Mapping[str, Any]]) -> str:
    """Why a need may lack the field: it did not succeed."""
    others = [
        f"node {name!r} {view.get('status')}"
        for name in sorted(compiled.references)
        if (view := nodes.get(name)) is not None and view.get("status") != "succeeded"
    ]
    return f" ({'; '.join(others)})" if others else ""


def _name(part: Expression) -> str:
    shown = part.source if len(part.source) <= _SHOWN else part.source[: _SHOWN - 3] + "..."
    return f"`{OPEN} {shown} {CLOSE}`"


def _closing(source: str, start: int) -> int | None:
    """Where the expression that starts at `start` ends: the first `}}` outside its
    string literals and map literals; None if it never does."""
    depth, index = 0, start
    while index < len(source):
        char = source[index]
        if char in "\"'":
            index = _string_end(source, index)
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            if depth == 0 and source.startswith(CLOSE, index):
                return index
            depth = max(0, depth - 1)
        index += 1
    return None


def _string_end(source: str, quote_at: int) -> int:
    """The index after a CEL string literal ('...', "...", triple-quoted, r/b prefixes);
    the end of `source` if it is not closed (the parser then says what is wrong)."""
    quote = source[quote_at]
    begin = quote_at  # where its prefix letters (r, b, in either order) begin
    while begin > 0 and quote_at - begin < 2 and source[begin - 1] in "rRbB":
        begin -= 1
    glued = begin > 0 and (source[begin - 1].isalnum() or source[begin - 1] == "_")
    raw = "r" in source[begin:quote_at].lower() and not glued
    delimiter = quote * 3 if source.startswith(quote * 3, quote_at) else quote
    index = quote_at + len(delimiter)
    while index < len(source):
        if source[index] == "\\" and not raw:
            index += 2
            continue
        if source.startswith(delimiter, index):
            return index + len(delimiter)
        index += 1
    return len(source)
