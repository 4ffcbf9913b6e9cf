"""Numbers a workflow or policy gives: durations (`500ms`, `30s`, `10m`, `1h`), sizes
(`64m`, `1g`, binary units), CPUs and counts.

Each parser takes what YAML produced and either returns a value in range or raises
ValueError with one clear sentence; nothing else escapes (a list, a float where an
integer is meant, a boolean, NaN or infinity, a negative or absurdly large number). The
bounds are far above any real machine, so they only ever refuse nonsense: a `>` ceiling
check cannot see NaN, and a size past what the engine takes would fail later, worse.
"""

from __future__ import annotations

import math
import re
from typing import Any

_DURATION = re.compile(r"^([0-9]{1,12}(?:\.[0-9]{1,9})?)(ms|s|m|h)$")
_DURATION_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE = re.compile(r"^([0-9]{1,20})([kmg]?)$")
_SIZE_FACTOR = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}

MAX_SECONDS = 30 * 24 * 3600.0  # a month
MAX_SIZE = 1 << 44  # 16 TiB
MAX_CPUS = 1024.0
MAX_PIDS = 4_194_304  # the kernel's largest pid_max


def parse_duration(value: Any) -> float:
    """Seconds from `500ms`/`30s`/`10m`/`1h`; a bare number is seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("expected a duration such as 30s, 10m or 1h")
    if isinstance(value, str):
        match = _DURATION.match(value.strip())
        if not match:
            raise ValueError(f"{value!r} is not a duration such as 500ms, 30s, 10m or 1h")
        seconds = float(match.group(1)) * _DURATION_SECONDS[match.group(2)]
    else:
        seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError("a duration must be a positive, finite number of seconds")
    if seconds > MAX_SECONDS:
        raise ValueError(f"a duration is at most {MAX_SECONDS / 3600:g}h")
    return seconds


def parse_size(value: Any) -> int:
    """Bytes from `64m`/`1g`/`512k` (binary units); a bare integer is bytes."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("expected a size such as 512k, 64m or 1g (a whole number of bytes)")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(value.strip().lower())
        if not match:
            raise ValueError(f"{value!r} is not a size such as 512k, 64m or 1g")
        size = int(match.group(1)) * _SIZE_FACTOR[match.group(2)]
    if size <= 0:
        raise ValueError("a size must be positive")
    if size > MAX_SIZE:
        raise ValueError(f"a size is at most {format_size(MAX_SIZE)}")
    return size


def parse_cpus(value: Any) -> float:
    """A positive, finite number of CPUs (fractions allowed)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected a number of CPUs such as 1 or 0.5")
    if not math.isfinite(value) or value < 0.01:
        raise ValueError("a number of CPUs is finite and at least 0.01")
    if value > MAX_CPUS:
        raise ValueError(f"a number of CPUs is at most {MAX_CPUS:g}")
    return float(value)


def parse_count(value: Any, least: int = 1, most: int = MAX_PIDS) -> int:
    """A whole number in [least, most]: never a float (2.0), a string or a boolean."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("expected a whole number")
    if not least <= value <= most:
        raise ValueError(f"expected a whole number from {least} to {most}")
    return value


def parse_factor(value: Any, least: float, most: float) -> float:
    """A finite number in [least, most]."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected a number")
    if not math.isfinite(value) or not least <= value <= most:
        raise ValueError(f"expected a number from {least:g} to {most:g}")
    return float(value)


def format_size(size: int) -> str:
    """The shortest exact binary-unit spelling: 536870912 -> '512m'."""
    for unit in ("g", "m", "k"):
        factor = _SIZE_FACTOR[unit]
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)
