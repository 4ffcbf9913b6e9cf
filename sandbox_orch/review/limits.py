"""Rules on limits and defaults: missing blocks, very high values, defaults above their
ceilings (SO601, SO602, SO610, SO611); and how limit values are shown."""

from __future__ import annotations

from ..policy import BUILTIN_DEFAULTS, BUILTIN_LIMITS
from ..units import format_size
from .checking import _Review

_HIGH = {
    "cpus": 8.0,
    "memory": 8 * 1024**3,
    "pids": 4096,
    "timeout": 6 * 3600.0,
    "output": 256 * 1024**2,
    "artifacts": 16 * 1024**3,
    "artifacts_total": 32 * 1024**3,  # memory held by a run's artifact volumes at once
    "tmpfs": 1024**3,
}
_LIMIT_KEYS = ("cpus", "memory", "pids", "timeout", "output", "artifacts")
_DEFAULT_KEYS = ("cpus", "memory", "pids", "timeout")


def format_duration(seconds: float) -> str:
    for unit, factor in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= factor and seconds % factor == 0:
            return f"{int(seconds // factor)}{unit}"
    return f"{seconds:g}s"


def _show(key: str, value: float) -> str:
    if key in ("memory", "output", "artifacts", "artifacts_total", "tmpfs"):
        return format_size(int(value))
    if key == "timeout":
        return format_duration(value)
    return f"{value:g}"


def _check_limits(r: _Review) -> None:
    policy = r.policy
    blocks = (
        ("limits", policy.limits, BUILTIN_LIMITS, _LIMIT_KEYS, "SO601", "ceiling"),
        ("defaults", policy.defaults, BUILTIN_DEFAULTS, _DEFAULT_KEYS, "SO602", "default"),
    )
    for block, values, builtin, keys, missing_rule, noun in blocks:
        for key in keys:
            value = getattr(values, key)
            if r.has((block, key)) and value > _HIGH[key]:
                r.add(
                    "SO610",
                    (block, key),
                    f"{block}.{key} {_show(key, value)} is above {_show(key, _HIGH[key])}",
                )
        missing = [k for k in keys if not r.has((block, k))]
        if missing:
            shown = ", ".join(f"{k} {_show(k, getattr(builtin, k))}" for k in missing)
            state = "not set" if not r.has((block,)) else "partial"
            r.add(
                missing_rule,
                (block,),
                f"{block} {state}: the built-in {noun}s apply: {shown}",
            )
    total = policy.limits.artifacts_total  # optional: 4 x artifacts when unset
    if r.has(("limits", "artifacts_total")) and total > _HIGH["artifacts_total"]:
        shown = _show("artifacts_total", total)
        high = _show("artifacts_total", _HIGH["artifacts_total"])
        r.add(
            "SO610",
            ("limits", "artifacts_total"),
            f"limits.artifacts_total {shown} is above {high}",
        )
    for key in _DEFAULT_KEYS:
        default, ceiling = getattr(policy.defaults, key), getattr(policy.limits, key)
        if default > ceiling:
            r.add(
                "SO611",
                ("defaults", key),
                f"defaults.{key} {_show(key, default)} is above limits.{key} {_show(key, ceiling)}",
            )
