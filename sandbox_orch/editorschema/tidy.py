"""What both schemas get last: the dialect, a title, one-line descriptions, sorted keys.
No `$id`: the project publishes no schema URL; editors take the file's path."""

from __future__ import annotations

import json
import re
from typing import Any

DIALECT = "https://json-schema.org/draft/2020-12/schema"
_BLANKS = re.compile(r"\s+")


def finished(schema: dict[str, Any], kind: str) -> dict[str, Any]:
    """`schema` with `$schema`, its title, and descriptions in one line each."""
    return {**_one_line(schema), "$schema": DIALECT, "title": f"sandbox-orch {kind} (version 1)"}


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
