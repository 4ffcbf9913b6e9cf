"""JSON Schemas for parser outputs: loaded and checked at validate time, applied (with
the `jsonschema` library) when a node's output is parsed. A schema can never make the
orchestrator fetch anything: `$ref`s resolve only within the schema itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry
from referencing.exceptions import NoSuchResource, Unresolvable

from .errors import InputRefused
from .yamlsafe import load_text, read_regular

MAX_SCHEMA_BYTES = 256 * 1024


class SchemaProblem(Exception):
    pass


def load_schema(value: dict[str, Any] | str, workflow_dir: Path) -> dict[str, Any]:
    """An inline schema, or a .json/.yaml file next to the workflow (never outside it)."""
    if isinstance(value, dict):
        schema = value
    else:
        path = (workflow_dir / value).resolve()
        if workflow_dir.resolve() not in path.parents:
            raise SchemaProblem(f"schema file {value!r} is not inside the workflow's directory")
        if not path.exists():
            raise SchemaProblem(f"schema file {value!r} does not exist")
        try:  # a FIFO or device is refused, never read (it could block forever)
            raw = read_regular(path, MAX_SCHEMA_BYTES)
            text = raw.decode("utf-8")
            schema = json.loads(text) if path.suffix == ".json" else load_text(text, str(path)).data
        except InputRefused as refused:
            raise SchemaProblem(f"schema file {value!r}: {refused.problems[0].message}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise SchemaProblem(f"schema file {value!r} is not valid JSON: {error}") from None
    if not isinstance(schema, dict):
        raise SchemaProblem("a schema is a mapping")
    validator = jsonschema.validators.validator_for(schema)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as error:
        raise SchemaProblem(f"invalid JSON Schema: {error.message}") from None
    return schema


def violation(schema: dict[str, Any], outputs: dict[str, Any]) -> str | None:
    """The first way `outputs` breaks `schema`, naming the field; None if it conforms."""
    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema, registry=Registry(retrieve=_no_retrieval))
    try:
        error = jsonschema.exceptions.best_match(validator.iter_errors(outputs))
    except Unresolvable as missing:
        return f"schema refers to {missing.ref!r}, which is not in the schema (never fetched)"
    if error is None:
        return None
    field = ".".join(str(part) for part in error.absolute_path) or "(outputs)"
    return f"outputs field {field}: {error.message}"


def _no_retrieval(uri: str) -> Any:
    raise NoSuchResource(ref=uri)
