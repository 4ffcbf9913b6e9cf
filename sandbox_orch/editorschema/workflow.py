"""The workflow file's JSON Schema, from the pydantic models the loader validates with
(workflow.py): `model_json_schema` in validation mode, then three documented steps.

1. Booleans: pydantic reads a boolean field laxly, so `fail_fast: "yes"` (a string under
   YAML 1.2) is true; the schema accepts the same spellings (`bool_schema` below).
2. Names checked in planning.py: the `nodes` map's keys must match NODE_NAME (pydantic
   would say that with patternProperties, which lets other keys through), and a custom
   runtime is never named like a preset.
3. Descriptions: the string under each field (docstrings.py), in one line.

The values our own parsers read (durations, sizes, egress grants, container paths) are
described on the types themselves with WithJsonSchema (editorschema/values.py).
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from ..runtimes import PRESETS
from ..workflow import NODE_NAME, Workflow
from . import tidy, values
from .docstrings import attribute_docstrings

# What pydantic's lax mode takes as a boolean: these strings in any case, and 0 and 1.
BOOL_WORDS = ("true", "false", "yes", "no", "on", "off", "t", "f", "y", "n", "1", "0")


LAX_BOOL: dict[str, Any] = {
    "anyOf": [
        {"type": "boolean"},
        {"enum": [0, 1]},
        {"type": "string", "pattern": f"^(?:{'|'.join(map(values.any_case, BOOL_WORDS))})$"},
    ]
}


class _LoaderSchema(GenerateJsonSchema):
    def bool_schema(self, schema: core_schema.BoolSchema) -> JsonSchemaValue:
        return LAX_BOOL if not schema.get("strict") else {"type": "boolean"}

    def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
        """A model's schema, each property described by the string under its field."""
        json_schema = super().model_schema(schema)
        cls = schema["cls"]
        docs = attribute_docstrings(cls)
        properties = json_schema.get("properties", {})
        for name, info in cls.model_fields.items():
            key = info.alias or name
            if key in properties and name in docs:
                properties[key].setdefault("description", docs[name])
        return json_schema


def workflow_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a workflow file."""
    schema = Workflow.model_json_schema(mode="validation", schema_generator=_LoaderSchema)
    nodes = schema["properties"]["nodes"]
    ((pattern, entry),) = nodes.pop("patternProperties").items()
    assert pattern == NODE_NAME.pattern  # the models' key type says the same
    nodes["propertyNames"] = {"pattern": pattern}
    nodes["additionalProperties"] = entry
    schema["properties"]["runtimes"]["propertyNames"] = {"not": {"enum": sorted(PRESETS)}}
    return tidy.finished(schema, "workflow")
