"""JSON values nested at most MAX_JSON_DEPTH deep.

Python's json module recurses once per level and raises RecursionError near a thousand
levels (`'[' * 100000` is 16 lines of shell away); code that walks a value recursively
later (schemas, CEL, redaction) would fail the same way. So a value is refused above a
documented depth, with one message whichever of the two notices it first.
"""

from __future__ import annotations

import json
from typing import Any

from .limits import MAX_JSON_DEPTH

_CONTAINERS = (dict, list)


class NestingError(ValueError):
    def __init__(self, limit: int = MAX_JSON_DEPTH) -> None:
        super().__init__(f"nested deeper than {limit} levels of arrays and objects")


def load_json(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> Any:
    """json.loads, refusing values nested deeper than `limit` (NestingError); other
    malformed input raises ValueError as json.loads does."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise NestingError(limit) from None
    check_depth(value, limit)
    return value


def check_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> None:
    """NestingError if `value` has more than `limit` levels of lists and dicts.

    Level by level, visiting each container once and skipping empty ones (whose level is
    still counted): 16 MiB of `[{}, {}, ...]` takes a fraction of a second.
    """
    if not isinstance(value, _CONTAINERS):
        return
    depth, level = 1, [value] if value else []
    while level:
        below: list[Any] = []
        deeper = False
        for container in level:
            items = container.values() if isinstance(container, dict) else container
            for item in items:
                if isinstance(item, _CONTAINERS):
                    deeper = True
                    if item:
                        below.append(item)
        if deeper:
            depth += 1
            if depth > limit:
                raise NestingError(limit)
        level = below
    if depth > limit:  # only for limit 0
        raise NestingError(limit)
