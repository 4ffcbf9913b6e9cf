"""JSON values nested at most MAX_JSON_DEPTH deep.

Python's json module recurses once per level and raises RecursionError near a thousand
levels (`'[' * 100000` is 16 lines of shell away); code that walks a value recursively
later (schemas, CEL, redaction) would fail the same way. So a value is refused above a
documented depth, with one message whichever of the two notices it first.

`NaN`, `Infinity` and `-Infinity` are refused too: Python's json module reads them, but
they are not JSON, and a value holding one would make the results file, the run store's
rows and `--json` events unreadable to any strict JSON reader (jq, JavaScript).
"""

from __future__ import annotations

import json
import math
from typing import Any

from .limits import MAX_JSON_DEPTH

_CONTAINERS = (dict, list)


class NestingError(ValueError):
    def __init__(self, limit: int = MAX_JSON_DEPTH) -> None:
        super().__init__(f"nested deeper than {limit} levels of arrays and objects")


class ConstantError(ValueError):
    """`NaN`, `Infinity` or `-Infinity`: Python reads them, JSON has no such values."""

    def __init__(self, name: str, why: str = "which is not a JSON value") -> None:
        super().__init__(f"holds {name}, {why}")


def _refuse_constant(name: str) -> Any:
    raise ConstantError(name)


def _finite(text: str) -> float:
    """A JSON number as a float; one past a double's range would be read as infinity."""
    value = float(text)
    if math.isinf(value):
        raise ConstantError(text[:32], "beyond the range of a double")
    return value


def load_json(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> Any:
    """json.loads, refusing values nested deeper than `limit` (NestingError) and the
    non-JSON constants NaN and Infinity (ConstantError); other malformed input raises
    ValueError as json.loads does."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
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
