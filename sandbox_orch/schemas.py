"""JSON Schemas for parser outputs: loaded and checked at validate time, applied (with
the `jsonschema` library) when a node's output is parsed. A schema can never make the
orchestrator fetch anything: `$ref`s resolve only within the schema itself.

A schema is workflow input and outputs are node input, so applying one is bounded too:
at validate time a schema is refused if it nests deeper than MAX_JSON_DEPTH, has a
pattern RE2 cannot compile, or applies itself to a value without ever descending into
it (`$ref: '#'`, definitions that refer to each other in a ring, or a chain that expands
past MAX_SCHEMA_EXPANSION subschemas). At run time the library's patterns run on RE2,
`uniqueItems` is linear, messages are bounded, and the whole check runs under the
evaluation worker's deadline and memory limit.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import jsonschema
import jsonschema._keywords
import jsonschema._legacy_keywords
import jsonschema._utils
from referencing import Registry
from referencing.exceptions import NoSuchResource, Unresolvable

from .bounded import patterns
from .bounded.limits import MAX_SCHEMA_EXPANSION
from .bounded.nesting import NestingError, check_depth, load_json
from .errors import InputRefused
from .yamlsafe import load_text, read_regular

MAX_SCHEMA_BYTES = 256 * 1024
MAX_MESSAGE = 200  # a longer message quotes too much of the output: name the keyword
MAX_FIELD_PART = 64

# jsonschema matches `pattern`, `patternProperties` (and the additionalProperties and
# unevaluatedProperties that depend on it) with `re.search`, which backtracks without
# bound on a hostile pattern. Its keyword modules get RE2's search instead; patterns were
# checked against RE2 when the schema was loaded. (tests/unit/test_schemas.py checks that
# no jsonschema module is left calling Python's `re`.)
_RE2 = types.SimpleNamespace(search=patterns.search)
for _module in (jsonschema._keywords, jsonschema._legacy_keywords, jsonschema._utils):
    _module.re = _RE2  # type: ignore[attr-defined]

# Keywords whose values are data, not subschemas: never read as schemas.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})
# Keywords that apply subschemas to the *same* value (no descent into it).
_IN_PLACE_LISTS = ("allOf", "anyOf", "oneOf")
_IN_PLACE_ONE = ("not", "if", "then", "else")
_IN_PLACE_MAPS = ("dependentSchemas", "dependencies")  # draft 7's name; lists are skipped
_REFS = ("$ref", "$recursiveRef", "$dynamicRef")


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
            schema = load_json(text) if path.suffix == ".json" else load_text(text, str(path)).data
        except InputRefused as refused:
            raise SchemaProblem(f"schema file {value!r}: {refused.problems[0].message}") from None
        except NestingError as error:
            raise SchemaProblem(f"schema file {value!r} is {error}") from None
        except ValueError as error:  # not UTF-8, not JSON
            raise SchemaProblem(f"schema file {value!r} is not valid JSON: {error}") from None
    if not isinstance(schema, dict):
        raise SchemaProblem("a schema is a mapping")
    try:
        check_depth(schema)
    except NestingError as error:
        raise SchemaProblem(f"a schema is {error}") from None
    validator = jsonschema.validators.validator_for(schema)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as error:
        raise SchemaProblem(f"invalid JSON Schema: {error.message}") from None
    _check_patterns(schema)
    _check_applications(schema)
    return schema


def violation(schema: dict[str, Any], outputs: dict[str, Any]) -> str | None:
    """The first way `outputs` breaks `schema`, naming the field; None if it conforms."""
    validator = _validator_class(schema)(schema, registry=Registry(retrieve=_no_retrieval))
    try:
        error = jsonschema.exceptions.best_match(validator.iter_errors(outputs))
    except Unresolvable as missing:
        return f"schema refers to {missing.ref!r}, which is not in the schema (never fetched)"
    except RecursionError:
        return "the schema could not be applied: it refers to itself too deeply"
    except patterns.PatternError as error:
        return f"schema pattern {error}"
    if error is None:
        return None
    message = error.message
    if len(message) > MAX_MESSAGE:
        message = f"fails the schema's {error.validator!r} keyword"
    return f"outputs field {_field(error.absolute_path)}: {message}"


def _field(path: Any) -> str:
    parts = [str(p) if len(str(p)) <= MAX_FIELD_PART else f"<{len(str(p))} characters>"
             for p in path]  # fmt: skip
    return ".".join(parts) or "(outputs)"


_EXTENDED: dict[type, type] = {}


def _validator_class(schema: dict[str, Any]) -> Any:
    """The schema's draft, with a uniqueItems that is linear in the array's length (the
    library's compares every pair of unhashable items) and names no items."""
    base = jsonschema.validators.validator_for(schema)
    if base not in _EXTENDED:
        _EXTENDED[base] = jsonschema.validators.extend(base, {"uniqueItems": _unique_items})
    return _EXTENDED[base]


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if unique and validator.is_type(instance, "array"):
        seen: set[Any] = set()
        for item in instance:
            key = _canonical(item)
            if key in seen:
                yield jsonschema.ValidationError("has non-unique elements")
                return
            seen.add(key)


def _canonical(value: Any) -> Any:
    """A hashable key equal for JSON-equal values (1 == 1.0; true is not 1)."""
    if isinstance(value, bool) or value is None:
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", value)
    if isinstance(value, dict):
        return ("o", frozenset((k, _canonical(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("a", tuple(_canonical(v) for v in value))
    return ("s", value)


def _no_retrieval(uri: str) -> Any:
    raise NoSuchResource(ref=uri)


# -- validate-time checks -----------------------------------------------------------------


def _subschemas(schema: Any) -> Iterator[dict[str, Any]]:
    """Every mapping in the schema that may be a schema (data keywords skipped)."""
    stack = [schema]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            yield value
            stack.extend(v for k, v in value.items() if k not in _DATA_KEYWORDS)
        elif isinstance(value, list):
            stack.extend(value)


def _check_patterns(schema: dict[str, Any]) -> None:
    for subschema in _subschemas(schema):
        found = subschema.get("pattern")
        named = subschema.get("patternProperties")
        candidates = [found] if isinstance(found, str) else []
        candidates += list(named) if isinstance(named, dict) else []
        for pattern in candidates:
            try:
                patterns.compile_pattern(pattern)
            except patterns.PatternError as error:
                raise SchemaProblem(f"pattern {pattern!r} {error}") from None


def _check_applications(root: dict[str, Any]) -> None:
    """Refuse a schema whose subschemas apply each other to one value in a ring (which
    never ends) or expand past MAX_SCHEMA_EXPANSION (which may as well not).

    Local references only (`#`, `#/json/pointer`, `#anchor`); a schema with embedded
    `$id`s changes what those mean, so it is left to the run-time bounds.
    """
    if any(isinstance(s.get("$id", s.get("id")), str) for s in _subschemas(root) if s is not root):
        return
    anchors = {
        s[key]: s
        for s in _subschemas(root)
        for key in ("$anchor", "$dynamicAnchor", "$recursiveAnchor")
        if isinstance(s.get(key), str)
    }
    counts: dict[int, int] = {}
    visiting = -1
    for start in _subschemas(root):
        if id(start) in counts:
            continue
        counts[id(start)] = visiting
        stack = [(start, _applied(start, root, anchors), 0)]
        while stack:  # depth-first, without recursion: a chain may be thousands long
            schema, children, index = stack[-1]
            if index < len(children):
                stack[-1] = (schema, children, index + 1)
                child = children[index]
                state = counts.get(id(child))
                if state == visiting:
                    raise SchemaProblem(
                        "the schema applies itself to a value without descending into it "
                        "(a $ref that leads back to itself), which never ends"
                    )
                if state is None:
                    counts[id(child)] = visiting
                    stack.append((child, _applied(child, root, anchors), 0))
                continue
            stack.pop()
            counts[id(schema)] = 1 + sum(counts[id(c)] for c in children)
            if counts[id(schema)] > MAX_SCHEMA_EXPANSION:
                raise SchemaProblem(
                    f"the schema applies more than {MAX_SCHEMA_EXPANSION} subschemas to one "
                    "value (through allOf/anyOf/oneOf/not/if/$ref)"
                )


def _applied(
    schema: dict[str, Any], root: dict[str, Any], anchors: dict[str, Any]
) -> list[dict[str, Any]]:
    """The subschemas (mappings) that `schema` applies to the same value."""
    found: list[Any] = []
    for key in _IN_PLACE_LISTS:
        if isinstance(schema.get(key), list):
            found += schema[key]
    found += [schema.get(key) for key in _IN_PLACE_ONE]
    for key in _IN_PLACE_MAPS:
        if isinstance(schema.get(key), dict):
            found += schema[key].values()
    for key in _REFS:
        if isinstance(schema.get(key), str):
            found.append(_local(schema[key], root, anchors))
    return [s for s in found if isinstance(s, dict)]


def _local(ref: str, root: dict[str, Any], anchors: dict[str, Any]) -> Any:
    """What a local reference points at, or None (not local, or not found)."""
    if not ref.startswith("#"):
        return None
    fragment = unquote(ref[1:])
    if not fragment.startswith("/"):
        return anchors.get(fragment) if fragment else root
    target: Any = root
    for token in fragment[1:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(target, dict) and token in target:
            target = target[token]
        elif isinstance(target, list) and token.isdigit() and int(token) < len(target):
            target = target[int(token)]
        else:
            return None
    return target
