"""Durations (`500ms`, `30s`, `10m`, `1h`) and sizes (`64m`, `1g`, binary units)."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_DURATION_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE = re.compile(r"^(\d+)([kmg]?)$")
_SIZE_FACTOR = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_duration(value: str | int | float) -> float:
    """Seconds from `500ms`/`30s`/`10m`/`1h`; a bare number is seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 10m or 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(value.strip())
        if not match:
            raise ValueError(f"{value!r} is not a duration such as 500ms, 30s, 10m or 1h")
        seconds = float(match.group(1)) * _DURATION_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


def parse_size(value: str | int) -> int:
    """Bytes from `64m`/`1g`/`512k` (binary units); a bare integer is bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 64m or 1g")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(value.strip().lower())
        if not match:
            raise ValueError(f"{value!r} is not a size such as 512k, 64m or 1g")
        size = int(match.group(1)) * _SIZE_FACTOR[match.group(2)]
    if size <= 0:
        raise ValueError("a size must be positive")
    return size


def format_size(size: int) -> str:
    """The shortest exact binary-unit spelling: 536870912 -> '512m'."""
    for unit in ("g", "m", "k"):
        factor = _SIZE_FACTOR[unit]
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)
