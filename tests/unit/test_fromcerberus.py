"""The cerberus-to-JSON-Schema converter, rule by rule: each converted rule refuses and
accepts what cerberus does, and a rule it does not know fails the conversion."""

from __future__ import annotations

import cerberus
import jsonschema
import pytest

from sandbox_orch.editorschema.fromcerberus import UnknownRule, convert_rules, convert_schema
from sandbox_orch.editorschema.values import documented


def is_positive(value):
    if not isinstance(value, int) or value < 1:
        raise ValueError("not positive")
    return value


def checker(parse):
    def check(field, value, error):
        try:
            parse(value)
        except ValueError as problem:
            error(field, str(problem))

    check.parses = parse
    return check


CHECKS = {is_positive: {"type": "integer", "minimum": 1}}

# (cerberus rules of field `f`, the JSON Schema expected, values both accept, both refuse)
RULES = [
    ({"type": "string"}, {"type": "string"}, ["a", ""], [1, None, ["a"]]),
    ({"type": "integer"}, {"type": "integer"}, [1, -2], ["1", 1.5]),
    ({"type": "boolean"}, {"type": "boolean"}, [True], [1, "true"]),
    ({"type": "list"}, {"type": "array"}, [[], [1]], ["a", {}]),
    ({"type": "dict"}, {"type": "object"}, [{}, {"x": 1}], [[], "a"]),
    ({"type": "float"}, {"type": "number"}, [1.5], ["1.5"]),
    ({"type": "string", "allowed": ["a", "b"]}, {"type": "string", "enum": ["a", "b"]}, ["a"], ["c"]),
    ({"type": "list", "allowed": ["ro", "rw"]}, {"type": "array", "items": {"enum": ["ro", "rw"]}},
     [[], ["ro", "rw"]], [["rx"]]),
    ({"type": "string", "regex": r"[1-9]\d*"}, {"type": "string", "pattern": r"^[1-9]\d*$"},
     ["10"], ["0", "10x", "x10"]),
    ({"type": "string", "regex": r"^a$"}, {"type": "string", "pattern": r"^a$"}, ["a"], ["ab"]),
    ({"type": "integer", "min": 1, "max": 3}, {"type": "integer", "minimum": 1, "maximum": 3},
     [1, 3], [0, 4]),
    ({"type": "string", "minlength": 2, "maxlength": 3},
     {"type": "string", "minLength": 2, "maxLength": 3}, ["ab", "abc"], ["a", "abcd"]),
    ({"type": "list", "minlength": 1}, {"type": "array", "minItems": 1}, [[1]], [[]]),
    ({"type": "string", "empty": False}, {"type": "string", "minLength": 1}, ["a"], [""]),
    ({"type": "list", "empty": False}, {"type": "array", "minItems": 1}, [[1]], [[]]),
    ({"type": "string", "empty": True}, {"type": "string"}, [""], []),
    ({"type": "string", "nullable": True}, {"anyOf": [{"type": "string"}, {"type": "null"}]},
     ["a", None], [1]),
    ({"type": "list", "schema": {"type": "string"}}, {"type": "array", "items": {"type": "string"}},
     [["a"]], [[1]]),
    ({"type": "dict", "schema": {"a": {"type": "string", "required": True}, "b": {"type": "integer"}}},
     {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
      "additionalProperties": False, "required": ["a"]},
     [{"a": "x"}, {"a": "x", "b": 1}], [{}, {"a": "x", "c": 1}, {"a": 1}]),
    ({"type": "dict", "allow_unknown": True, "schema": {"a": {"type": "string"}}},
     {"type": "object", "properties": {"a": {"type": "string"}}},
     [{"a": "x", "c": 1}], [{"a": 1}]),
    ({"type": "dict", "keysrules": {"type": "string", "regex": "[a-z]+"},
      "valuesrules": {"type": "integer"}},
     {"type": "object", "propertyNames": {"type": "string", "pattern": "^[a-z]+$"},
      "additionalProperties": {"type": "integer"}},
     [{"ab": 1}], [{"A": 1}, {"a": "1"}]),
    ({"anyof": [{"type": "string"}, {"type": "integer"}]},
     {"anyOf": [{"type": "string"}, {"type": "integer"}]}, ["a", 1], [[]]),
    ({"oneof": [{"type": "integer", "min": 0}, {"type": "integer", "max": 10}]},
     {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "integer", "maximum": 10}]},
     [-1, 11], [5]),
    ({"type": "integer", "noneof": [{"min": 5}]}, {"type": "integer", "not": {"anyOf": [{"minimum": 5}]}},
     [4], [5]),
    ({"check_with": checker(is_positive)}, {"type": "integer", "minimum": 1}, [1], [0, "1"]),
    ({"type": "dict", "schema": {"a": {"type": "string", "excludes": "b"}, "b": {"type": "string"}}},
     {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
      "additionalProperties": False, "allOf": [{"not": {"anyOf": [{"required": ["a", "b"]}]}}]},
     [{"a": "x"}, {"b": "y"}], [{"a": "x", "b": "y"}]),
    (documented({"type": "string"}, "What it is.", "e.g."),
     {"type": "string", "description": "What it is.", "examples": ["e.g."]}, ["a"], [1]),
    (documented({"type": "list"}, "Lists.", ["a", "b"]),
     {"type": "array", "description": "Lists.", "examples": [["a", "b"]]}, [["a"]], ["a"]),
]  # fmt: skip


@pytest.mark.parametrize(("rules", "expected", "good", "bad"), RULES, ids=lambda v: str(v)[:50])
def test_a_rule_converts_to_what_cerberus_enforces(rules, expected, good, bad):
    converted = convert_rules(rules, CHECKS)
    assert converted == expected
    cerberus_check = cerberus.Validator({"f": rules})
    schema = jsonschema.Draft202012Validator(convert_schema({"f": rules}, CHECKS))
    for value in good:
        assert cerberus_check.validate({"f": value}), (value, cerberus_check.errors)
        assert schema.is_valid({"f": value}), value
    for value in bad:
        assert not cerberus_check.validate({"f": value}), value
        assert not schema.is_valid({"f": value}), value


def test_a_schema_refuses_unknown_keys_and_requires_the_required():
    converted = convert_schema({"a": {"type": "string", "required": True}}, CHECKS)
    assert converted == {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "additionalProperties": False,
        "required": ["a"],
    }


@pytest.mark.parametrize(
    ("rules", "says"),
    [
        ({"type": "string", "coerce": int}, "coerce"),
        ({"type": "string", "forbidden": ["x"]}, "forbidden"),
        ({"type": "string", "dependencies": "b"}, "dependencies"),
        ({"type": "string", "default": "x"}, "default"),
        ({"type": "string", "contains": "x"}, "contains"),
        ({"type": ["string", "integer"]}, "type"),
        ({"type": "datetime"}, "type"),
        ({"schema": {"type": "string"}}, "needs `type: dict` or `type: list`"),
        ({"type": "integer", "minlength": 1}, "length rule"),
        ({"check_with": checker(int)}, "no JSON Schema given for the check"),
        ({"check_with": "named_method"}, "no JSON Schema given for the check"),
        ({"meta": {"description": "x", "deprecated": True}}, "meta keys"),
        ({"type": "dict", "schema": {"a": {"type": "string", "rename": "b"}}}, "rename"),
    ],
)
def test_a_rule_the_converter_does_not_know_fails_loudly(rules, says):
    with pytest.raises(UnknownRule, match=says):
        convert_rules(rules, CHECKS)


def test_a_check_that_says_another_type_than_its_rule_fails():
    with pytest.raises(UnknownRule, match="says type integer"):
        convert_rules({"type": "string", "check_with": checker(is_positive)}, CHECKS)


def test_the_policy_schema_converts_whole_so_every_rule_in_it_is_known():
    from sandbox_orch.editorschema.policy import checks
    from sandbox_orch.policy import SCHEMA

    converted = convert_schema(SCHEMA, checks())
    assert converted["required"] == ["version", "name"]
    assert converted["additionalProperties"] is False


def test_cerberus_ignores_meta_in_validation():
    rules = documented({"type": "string"}, "x", ["nested", "list"])
    validator = cerberus.Validator({"f": rules})
    assert validator.validate({"f": "a"}) and not validator.validate({"f": 1})
