"""JSON Schema fragments for the values our own parsers read (units.py, egress grants,
container paths, broker fields): what an editor can check of `30s`, `512m` or
`api.example.com:443` before the loader sees it.

Each fragment accepts every spelling its parser accepts (the string patterns are the
parsers' own regular expressions, with the surrounding whitespace the parsers strip) and
refuses what JSON Schema can tell is wrong. What it cannot tell (a `99999h` duration past
the ceiling, a host name that is not valid IDNA, a size written `1e12`) the loader still
refuses: tests/unit/test_editor_schema.py lists those cases with their reasons.
"""

from __future__ import annotations

from typing import Any

from ..containerpaths import MAX_LENGTH
from ..units import _DURATION, _SIZE, MAX_CPUS, MAX_PIDS, MAX_SECONDS, MAX_SIZE

Fragment = dict[str, Any]


def documented(rules: dict[str, Any], description: str, *examples: Any) -> dict[str, Any]:
    """A cerberus rule set with its description (and examples) for editors, in cerberus's
    `meta` rule, which validation ignores. Lists in examples become tuples: cerberus
    hashes schemas and cannot hash a list inside a list (fromcerberus makes them lists)."""
    meta: dict[str, Any] = {"description": description}
    if examples:
        meta["examples"] = tuple(_frozen(example) for example in examples)
    return {**rules, "meta": meta}


def _frozen(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_frozen(item) for item in value)
    if isinstance(value, dict):
        return {key: _frozen(item) for key, item in value.items()}
    return value


def thawed(value: Any) -> Any:
    """JSON's arrays again: tuples in `value` as lists."""
    if isinstance(value, list | tuple):
        return [thawed(item) for item in value]
    if isinstance(value, dict):
        return {key: thawed(item) for key, item in value.items()}
    return value


def any_case(word: str) -> str:
    """A pattern matching `word` in any case (JSON Schema's patterns have no flags)."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in word)


def _anchored_with_blanks(pattern: str) -> str:
    """A parser's `^...$` pattern, as matched after str.strip(): blanks either side."""
    return r"^\s*" + pattern.removeprefix("^").removesuffix("$") + r"\s*$"


# Patterns here use no lookaround: editors run them as ECMAScript, our tests with RE2
# (schemas.py makes jsonschema match patterns with RE2); a `not` says what lookaround would.
DURATION: Fragment = {
    "anyOf": [
        {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_SECONDS},
        {
            "type": "string",
            "pattern": _anchored_with_blanks(_DURATION.pattern),
            "not": {"pattern": r"^\s*[0.]*(?:ms|s|m|h)\s*$"},  # positive: never only zeros
        },
    ],
    "examples": ["30s", "10m", "1h", "500ms"],
}

# The size parser lower-cases before matching: 512M is 512m.
SIZE: Fragment = {
    "anyOf": [
        {"type": "integer", "minimum": 1, "maximum": MAX_SIZE},
        {
            "type": "string",
            "pattern": _anchored_with_blanks(_SIZE.pattern.replace("[kmg]", "[kmgKMG]")),
        },
    ],
    "examples": ["64m", "1g", "512k"],
}


def bounded_size(most: int) -> Fragment:
    """A size whose ceiling is lower than MAX_SIZE (JSON Schema can bound only the
    number of bytes, not `120k` written as a string)."""
    plain, spelled = SIZE["anyOf"]
    return {**SIZE, "anyOf": [{**plain, "maximum": most}, spelled]}


CPUS: Fragment = {"type": "number", "minimum": 0.01, "maximum": MAX_CPUS, "examples": [1, 0.5]}


def count(least: int = 1, most: int = MAX_PIDS) -> Fragment:
    """A whole number in [least, most] (units.parse_count)."""
    return {"type": "integer", "minimum": least, "maximum": most}


def factor(least: float, most: float) -> Fragment:
    """A number in [least, most] (units.parse_factor)."""
    return {"type": "number", "minimum": least, "maximum": most}


# host:port, *.domain:port or [IPv6]:port (egress/grants.Grant.of): the port is decimal
# digits, the host has no blanks, `/`, `[`, `]` or `:`, and `*` only as `*.` in front.
GRANT: Fragment = {
    "type": "string",
    "pattern": r"^(?:(?:\*\.)?[^\s*:/\[\]]+|\[[^\]]+\]):[0-9]+$",
    "examples": ["api.anthropic.com:443", "*.githubusercontent.com:443", "[2001:db8::1]:443"],
}

# An absolute path inside the container (containerpaths.normalise), no control characters.
CONTAINER_PATH: Fragment = {
    "type": "string",
    "pattern": r"^/[^\x00-\x1f\x7f]*$",
    "maxLength": MAX_LENGTH,
    "examples": ["/workspace", "/out/dist"],
}

ENV_NAME: Fragment = {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"}
