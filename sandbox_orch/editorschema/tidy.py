"""What both schemas get last: the dialect, an id, one-line descriptions, sorted keys."""

from __future__ import annotations

import json
import re
from typing import Any

DIALECT = "https://json-schema.org/draft/2020-12/schema"
BASE_ID = "https://github.com/sandbox-orch/sandbox-orch/schemas/{kind}-v1.json"
_BLANKS = re.compile(r"\s+")


def finished(schema: dict[str, Any], kind: str) -> dict[str, Any]:
    """`schema` with `$schema`, `$id` and descriptions in one line each."""
    return {"$schema": DIALECT, "$id": BASE_ID.format(kind=kind), **_one_line(schema)}


def _one_line(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: _BLANKS.sub(" ", item).strip()
            if key == "description" and isinstance(item, str)
            else _one_line(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_one_line(item) for item in value]
    return value


def render(schema: dict[str, Any]) -> str:
    """Pretty JSON with sorted keys: the same text for the same definitions, to commit
    and diff."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
