"""Output schemas: what is refused when the workflow is validated (exit 2), and how a
schema is applied to hostile outputs at run time (bounded, a reason, never a crash)."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
import time
from pathlib import Path

import jsonschema
import pytest

from sandbox_orch.bounded.limits import MAX_SCHEMA_EXPANSION
from sandbox_orch.errors import InputRefused
from sandbox_orch.schemas import SchemaProblem, load_schema, violation

from .helpers import plan_of

HERE = Path(".")
CYCLE = "applies itself to a value without descending into it"


def chain(length: int, fanout: int) -> dict:
    """Definitions d0..dN where each applies the next `fanout` times: fanout**N in all."""
    defs = {f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}] * fanout} for i in range(length)}
    return {"$defs": {**defs, f"d{length}": {"type": "object"}}, "$ref": "#/$defs/d0"}


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"$ref": "#"}, CYCLE),
        ({"allOf": [{"$ref": "#"}]}, CYCLE),
        ({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"anyOf": [{"$ref": "#/$defs/a"}]}},
          "properties": {"x": {"$ref": "#/$defs/a"}}}, CYCLE),
        ({"definitions": {"a": {"not": {"$ref": "#/definitions/a"}}}, "$ref": "#/definitions/a"},
         CYCLE),
        ({"$defs": {"a": {"$anchor": "me", "oneOf": [{"$ref": "#me"}]}}}, CYCLE),
        ({"$defs": {"a~b/c": {"$ref": "#/$defs/a~0b~1c"}}}, CYCLE),
        ({"$defs": {"a b": {"$ref": "#/$defs/a%20b"}}}, CYCLE),
        ({"if": {"$ref": "#"}}, CYCLE),
        ({"dependentSchemas": {"x": {"$ref": "#"}}}, CYCLE),
        ({"$schema": "http://json-schema.org/draft-07/schema#",
          "dependencies": {"x": ["y"], "z": {"$ref": "#"}}}, CYCLE),
        (chain(20, 2), f"more than {MAX_SCHEMA_EXPANSION} subschemas"),
        ({"properties": {"s": {"pattern": r"(a)\1"}}}, r"pattern '\(a\)\\\\1' is not a valid"),
        ({"patternProperties": {"(?<=x)y": {}}}, "is not a valid regular expression for RE2"),
        ({"properties": {"a": {"type": "string", "pattern": "x" * 5000}}}, "longer than 4096"),
        ({"properties": {"a": {"type": "wat"}}}, "invalid JSON Schema"),
    ],
)  # fmt: skip
def test_refused_at_validate_time(schema, message):
    with pytest.raises(SchemaProblem, match=message):
        load_schema(schema, HERE)


def test_deep_schemas_are_refused_inline_and_in_files(tmp_path):
    deep: dict = {}
    for _ in range(80):
        deep = {"items": deep}
    with pytest.raises(SchemaProblem, match="nested deeper than 64 levels"):
        load_schema(deep, tmp_path)
    (tmp_path / "deep.json").write_text('{"items": ' * 5000 + "{}" + "}" * 5000)
    with pytest.raises(SchemaProblem, match=r"deep\.json' is nested deeper than 64 levels"):
        load_schema("deep.json", tmp_path)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"child": {"$ref": "#"}}},  # recursion that descends
        {"$defs": {"n": {"type": "integer"}}, "properties": {"a": {"$ref": "#/$defs/n"}}},
        chain(11, 2),  # about 3 * 2**11 subschemas: under the limit
        {"properties": {"id": {"type": "string"}, "pattern": {"type": "string"},
                        "not": {"type": "string"}, "$ref": {"type": "string"}}},
        {"properties": {"x": {"default": {"$ref": "#", "pattern": "(?=x)"}}}},  # data, not schema
        {"$id": "https://example.com/s", "$defs": {"n": {"type": "integer"}},
         "properties": {"a": {"$ref": "#/$defs/n"}}},
    ],
)  # fmt: skip
def test_ordinary_schemas_are_accepted(schema):
    assert load_schema(schema, HERE) == schema


def test_plan_refuses_a_self_referencing_schema_with_file_and_line():
    with pytest.raises(InputRefused) as caught:
        plan_of(
            "version: 1\nname: x\nnodes:\n  a:\n    command: [x]\n    outputs:\n"
            "      parse: {format: json, schema: {$ref: '#'}}\n"
        )
    (problem,) = caught.value.problems
    assert str(problem).startswith("wf.yaml:7: nodes.a.outputs.parse.schema: the schema applies")


# --- run time ---------------------------------------------------------------------------------

LONG = "a" * 100_000 + "!"


@pytest.mark.parametrize(
    ("schema", "outputs"),
    [
        ({"properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}}, {"s": LONG}),
        ({"patternProperties": {"^(a+)+$": {"type": "integer"}}, "required": ["b"]}, {LONG: "x"}),
        ({"patternProperties": {"^(a+)+$": {}}, "additionalProperties": False}, {LONG: 1}),
        ({"$schema": "https://json-schema.org/draft/2020-12/schema",
          "patternProperties": {"^(a+)+$": {}}, "unevaluatedProperties": False}, {LONG: 1}),
        ({"$schema": "http://json-schema.org/draft-04/schema#",
          "patternProperties": {"^(a+)+$": {}}, "additionalProperties": False}, {LONG: 1}),
        ({"propertyNames": {"pattern": "^(a+)+$"}}, {LONG: 1}),
    ],
)  # fmt: skip
def test_schema_patterns_run_in_linear_time_and_reasons_stay_short(schema, outputs):
    load_schema(schema, HERE)
    began = time.monotonic()
    reason = violation(schema, outputs)
    assert time.monotonic() - began < 5
    assert reason is not None and reason.startswith("outputs field ")
    assert len(reason) < 300 and LONG not in reason


def test_no_jsonschema_module_matches_with_pythons_re():
    """Every jsonschema module that searches with a schema's pattern uses RE2: guards an
    upgrade of the library that would move its `re.search` calls elsewhere."""
    searching = []
    for info in pkgutil.walk_packages(jsonschema.__path__, "jsonschema."):
        if info.ispkg:
            continue
        source = Path(importlib.util.find_spec(info.name).origin).read_text()
        if re.search(r"\bre\.(search|match|fullmatch|finditer|findall)\(", source):
            if ".tests." in info.name or ".benchmarks." in info.name:
                continue  # never imported by sandbox-orch
            searching.append(info.name)
            module = importlib.import_module(info.name)
            assert module.re is not re, f"{info.name} matches schema patterns with Python's re"
    assert searching  # the check found what it guards


def test_unique_items_is_linear_and_keeps_json_equality():
    schema = {"properties": {"xs": {"uniqueItems": True}}}
    # 20,000 items: about a second when linear; pairwise, 200 million comparisons of
    # nested values, far past the bound (which a busy CI machine cannot reach otherwise).
    many = [{"a": i, "b": [i, {"c": i}]} for i in range(20_000)]
    began = time.monotonic()
    assert violation(schema, {"xs": many}) is None
    assert time.monotonic() - began < 30
    assert violation(schema, {"xs": [*many, {"b": [7, {"c": 7}], "a": 7}]}) == (
        "outputs field xs: has non-unique elements"
    )
    assert violation(schema, {"xs": [1, 1.0]}) is not None  # equal numbers
    assert violation(schema, {"xs": [1, True]}) is None  # a boolean is not a number
    assert violation(schema, {"xs": [0, False, None, "", [], {}]}) is None


def test_a_reference_loop_the_static_check_cannot_see_fails_with_a_reason():
    # Through an embedded $id, which the static check leaves to the run-time bounds.
    schema = {"$defs": {"x": {"$id": "https://example.com/x", "$ref": "https://example.com/x"}},
              "$ref": "#/$defs/x"}  # fmt: skip
    load_schema(schema, HERE)
    reason = violation(schema, {})
    assert reason is not None and "refers to itself" in reason


def test_long_keys_are_not_quoted_in_the_field():
    reason = violation({"additionalProperties": {"type": "integer"}}, {LONG: "x"})
    assert reason == f"outputs field <{len(LONG)} characters>: 'x' is not of type 'integer'"
