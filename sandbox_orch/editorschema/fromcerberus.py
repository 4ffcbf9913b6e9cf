"""Cerberus rules to JSON Schema (draft 2020-12), for the policy file's schema.

A small, strict converter: each rule it knows maps to its JSON Schema keywords; a rule it
does not know raises UnknownRule, never dropped, so a rule added to the policy schema
cannot silently vanish from the editors' schema. `check_with` functions are opaque to
it: the caller passes, for each one, the fragment saying what it accepts (keyed by the
parser the check wraps, `check.parses`, see policy._checker); an unknown one raises too.

Cerberus semantics kept: `allow_unknown` is False unless said (additionalProperties
false for every mapping with a `schema`); `regex` must match the whole value; a list's
`allowed` applies to each item; `empty: False` means at least one character, item or key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .values import thawed

Fragment = dict[str, Any]
Checks = Mapping[Callable[..., Any], Fragment]

TYPES = {
    "string": "string",
    "integer": "integer",
    "float": "number",
    "number": "number",
    "boolean": "boolean",
    "dict": "object",
    "list": "array",
}
# Handled where the rule set is a field of a mapping (required) or by another rule.
_AT_PARENT = {"required", "excludes"}


class UnknownRule(ValueError):
    """A cerberus rule (or check) the converter has no JSON Schema for."""


def convert_schema(schema: Mapping[str, Any], checks: Checks) -> Fragment:
    """A cerberus schema (the mapping of field -> rules) as a JSON Schema object."""
    properties = {name: convert_rules(rules, checks) for name, rules in schema.items()}
    out: Fragment = {"type": "object", "properties": properties, "additionalProperties": False}
    required = [name for name, rules in schema.items() if rules.get("required")]
    if required:
        out["required"] = required
    exclusions = [_excluded(name, rules["excludes"]) for name, rules in schema.items()
                  if "excludes" in rules]  # fmt: skip
    if exclusions:
        out["allOf"] = exclusions
    return out


def convert_rules(rules: Mapping[str, Any], checks: Checks) -> Fragment:
    """One field's rule set as a JSON Schema."""
    unknown = sorted(set(rules) - set(_RULES) - _AT_PARENT)
    if unknown:
        raise UnknownRule(f"no JSON Schema for the cerberus rule(s) {', '.join(unknown)}")
    kind = rules.get("type")
    if isinstance(kind, list) or (kind is not None and kind not in TYPES):
        raise UnknownRule(f"no JSON Schema for the cerberus type {kind!r}")
    out: Fragment = {}
    for rule, value in rules.items():
        if rule in _RULES:
            _RULES[rule](out, value, rules, checks)
    if rules.get("nullable"):
        out = {"anyOf": [out, {"type": "null"}]}
    return out


def _type(out: Fragment, value: str, rules: Mapping[str, Any], checks: Checks) -> None:
    out["type"] = TYPES[value]


def _schema(
    out: Fragment, value: Mapping[str, Any], rules: Mapping[str, Any], checks: Checks
) -> None:
    if rules.get("type") == "dict":
        nested = convert_schema(value, checks)
        if rules.get("allow_unknown") is True:
            del nested["additionalProperties"]
        out.update({k: v for k, v in nested.items() if k != "type"})
    elif rules.get("type") == "list":
        out["items"] = {**convert_rules(value, checks), **out.get("items", {})}
    else:  # cerberus would pick by the value's type; say which in the schema
        raise UnknownRule("a `schema` rule needs `type: dict` or `type: list` beside it")


def _allow_unknown(out: Fragment, value: Any, rules: Mapping[str, Any], checks: Checks) -> None:
    if isinstance(value, Mapping):
        out["additionalProperties"] = convert_rules(value, checks)
    elif not isinstance(value, bool):
        raise UnknownRule(f"allow_unknown {value!r}")


def _allowed(out: Fragment, value: list[Any], rules: Mapping[str, Any], checks: Checks) -> None:
    if rules.get("type") == "list":
        out["items"] = {**out.get("items", {}), "enum": list(value)}
    else:
        out["enum"] = list(value)


def _regex(out: Fragment, value: str, rules: Mapping[str, Any], checks: Checks) -> None:
    # Cerberus matches from the start and appends `$` if missing: a whole-value match.
    out["pattern"] = (
        ("" if value.startswith("^") else "^") + value + ("" if value.endswith("$") else "$")
    )


def _bound(keyword: str) -> Callable[[Fragment, Any, Mapping[str, Any], Checks], None]:
    def convert(out: Fragment, value: Any, rules: Mapping[str, Any], checks: Checks) -> None:
        out[keyword] = value

    return convert


def _length(least: bool) -> Callable[[Fragment, Any, Mapping[str, Any], Checks], None]:
    def convert(out: Fragment, value: int, rules: Mapping[str, Any], checks: Checks) -> None:
        out[_size_keyword(rules.get("type"), least)] = value

    return convert


def _size_keyword(kind: str | None, least: bool) -> str:
    words = {"string": "Length", "list": "Items", "dict": "Properties"}
    if kind not in words:
        raise UnknownRule(f"a length rule needs a string, list or dict type, not {kind!r}")
    return ("min" if least else "max") + words[kind]


def _empty(out: Fragment, value: bool, rules: Mapping[str, Any], checks: Checks) -> None:
    if not value:
        out[_size_keyword(rules.get("type"), least=True)] = 1


def _keysrules(
    out: Fragment, value: Mapping[str, Any], rules: Mapping[str, Any], checks: Checks
) -> None:
    out["propertyNames"] = convert_rules(value, checks)


def _valuesrules(
    out: Fragment, value: Mapping[str, Any], rules: Mapping[str, Any], checks: Checks
) -> None:
    out["additionalProperties"] = convert_rules(value, checks)


def _of(keyword: str) -> Callable[[Fragment, Any, Mapping[str, Any], Checks], None]:
    def convert(out: Fragment, value: list[Any], rules: Mapping[str, Any], checks: Checks) -> None:
        out[keyword] = [convert_rules(choice, checks) for choice in value]

    return convert


def _check_with(out: Fragment, value: Any, rules: Mapping[str, Any], checks: Checks) -> None:
    parser = getattr(value, "parses", value)
    if parser not in checks:
        raise UnknownRule(
            f"no JSON Schema given for the check {getattr(parser, '__qualname__', parser)!r}"
        )
    fragment = dict(checks[parser])
    if "type" in out and "type" in fragment and fragment["type"] != out["type"]:
        raise UnknownRule(f"check {parser!r} says type {fragment['type']}, the rule {out['type']}")
    out.update(fragment)


def _meta(
    out: Fragment, value: Mapping[str, Any], rules: Mapping[str, Any], checks: Checks
) -> None:
    extra = set(value) - {"description", "examples"}
    if extra:
        raise UnknownRule(f"meta keys {sorted(extra)}: only description and examples")
    out.update(thawed(value))


def _nothing(out: Fragment, value: Any, rules: Mapping[str, Any], checks: Checks) -> None:
    """nullable is applied last, around the whole fragment (convert_rules)."""


_RULES: dict[str, Callable[[Fragment, Any, Mapping[str, Any], Checks], None]] = {
    "type": _type,
    "schema": _schema,
    "allow_unknown": _allow_unknown,
    "allowed": _allowed,
    "regex": _regex,
    "min": _bound("minimum"),
    "max": _bound("maximum"),
    "minlength": _length(least=True),
    "maxlength": _length(least=False),
    "empty": _empty,
    "nullable": _nothing,
    "keysrules": _keysrules,
    "valuesrules": _valuesrules,
    "anyof": _of("anyOf"),
    "oneof": _of("oneOf"),
    "allof": _of("allOf"),
    "noneof": lambda out, value, rules, checks: out.update(
        {"not": {"anyOf": [convert_rules(choice, checks) for choice in value]}}
    ),
    "check_with": _check_with,
    "meta": _meta,
}


def _excluded(name: str, others: str | list[str]) -> Fragment:
    """`excludes`: the field and any of the others are never both present."""
    names = [others] if isinstance(others, str) else list(others)
    return {"not": {"anyOf": [{"required": [name, other]} for other in names]}}
