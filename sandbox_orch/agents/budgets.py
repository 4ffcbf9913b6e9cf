"""Budgets: how much a run or a node may spend (tokens, USD, turns, tool calls), each as
`warn` or `block`. Pure: the models a workflow and a policy write, and the checks that
say which limit a usage crossed. The scheduler and the live reader act on the answers.

A budget written as a bare number blocks: a spend limit that only warned unless told
otherwise would be the unsafe default.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, WithJsonSchema, model_validator

from ..units import parse_count

MAX_USD = 1_000_000.0
MAX_TOKENS = 10**12
MAX_EVENTS = 10**9  # turns and tool calls

Mode = Literal["warn", "block"]
METRICS = ("tokens", "usd", "turns", "tool_calls")


def parse_usd(value: Any) -> float:
    """A positive, finite amount of US dollars (cents allowed)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected an amount of US dollars such as 0.5 or 20")
    if not math.isfinite(value) or value <= 0:
        raise ValueError("an amount of US dollars is finite and above 0")
    if value > MAX_USD:
        raise ValueError(f"an amount of US dollars is at most {MAX_USD:,.0f}")
    return float(value)


def _tokens(value: Any) -> int:
    return parse_count(value, 1, MAX_TOKENS)


def _events(value: Any) -> int:
    return parse_count(value, 1, MAX_EVENTS)


_PARSERS = {"tokens": _tokens, "usd": parse_usd, "turns": _events, "tool_calls": _events}


class _Strict(BaseModel):
    # The string under a field is its description in `sandbox-orch schema workflow`.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limit(_Strict):
    """One limit: `usd: 0.5` (blocks) or `usd: {limit: 0.5, mode: warn}`."""

    limit: float
    mode: Mode = "block"


def _limit_of(metric: str) -> Any:
    def parse(value: Any) -> Any:
        if isinstance(value, Limit):  # already checked (with_ceiling merges two budgets)
            return value
        if isinstance(value, dict):
            if "limit" not in value:
                raise ValueError("a budget written as a mapping needs `limit` (and `mode`)")
            return {**value, "limit": _PARSERS[metric](value["limit"])}
        return {"limit": _PARSERS[metric](value), "mode": "block"}

    return BeforeValidator(parse)


_SCALAR_SCHEMAS: dict[str, dict[str, Any]] = {
    "tokens": {"type": "integer", "minimum": 1, "maximum": MAX_TOKENS},
    "usd": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_USD},
    "turns": {"type": "integer", "minimum": 1, "maximum": MAX_EVENTS},
    "tool_calls": {"type": "integer", "minimum": 1, "maximum": MAX_EVENTS},
}


def _schema_of(metric: str) -> WithJsonSchema:
    """For editors: what `_limit_of(metric)` accepts, a bare limit or `{limit, mode}`."""
    scalar = _SCALAR_SCHEMAS[metric]
    mode = {"enum": ["warn", "block"], "description": "warn: report it; block (default): stop"}
    mapping = {
        "type": "object",
        "properties": {"limit": {**scalar, "description": "The limit."}, "mode": mode},
        "required": ["limit"],
        "additionalProperties": False,
    }
    return WithJsonSchema({"anyOf": [scalar, mapping]})


class Budget(_Strict):
    """`budget:` on a workflow (the whole run) or on a node."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})  # see _something

    tokens: Annotated[Limit, _limit_of("tokens"), _schema_of("tokens")] | None = None
    """Input plus output tokens: a number (blocks), or `{limit, mode: warn|block}`."""
    usd: Annotated[Limit, _limit_of("usd"), _schema_of("usd")] | None = None
    """US dollars (cents allowed): a number (blocks), or `{limit, mode: warn|block}`."""
    turns: Annotated[Limit, _limit_of("turns"), _schema_of("turns")] | None = None
    """Agent turns: a number (blocks), or `{limit, mode: warn|block}`."""
    tool_calls: Annotated[Limit, _limit_of("tool_calls"), _schema_of("tool_calls")] | None = None
    """Tool calls: a number (blocks), or `{limit, mode: warn|block}`."""

    @model_validator(mode="after")
    def _something(self) -> Budget:
        if not self.limits():
            raise ValueError("a budget names at least one of tokens, usd, turns, tool_calls")
        return self

    def limits(self) -> dict[str, Limit]:
        return {m: v for m in METRICS if (v := getattr(self, m)) is not None}


@dataclass(frozen=True)
class Crossing:
    """A usage past one limit of one budget."""

    scope: str  # "run", or the node's name
    metric: str
    spent: float
    limit: float
    mode: Mode

    @property
    def reason(self) -> str:
        """`budget exceeded: usd 0.52 > 0.50` (the node's budget; the run's says so)."""
        whose = "" if self.scope != "run" else " (the run's)"
        return f"budget exceeded{whose}: {self.metric} {_show(self.metric, self.spent)} > " \
            f"{_show(self.metric, self.limit)}"  # fmt: skip

    @property
    def key(self) -> tuple[str, str]:
        return (self.scope, self.metric)


def _show(metric: str, value: float) -> str:
    return f"{value:.2f}" if metric == "usd" else f"{int(value)}"


def spent(usage: Mapping[str, Any] | None, metric: str) -> float:
    """One metric of a usage record (agents/usage.py's JSON form)."""
    usage = usage or {}
    if metric == "usd":
        return float(usage.get("cost_usd") or 0.0)
    if metric == "tokens":
        return float(usage.get("total_tokens") or 0)
    if metric == "turns":
        return float(usage.get("turns") or 0)
    return float(sum((usage.get("tool_calls") or {}).values()))


def crossings(scope: str, budget: Budget | None, usage: Mapping[str, Any] | None) -> list[Crossing]:
    """Each limit of `budget` that `usage` is past (strictly: a budget of 0.50 lets
    0.50 be spent)."""
    if budget is None:
        return []
    found = []
    for metric, limit in budget.limits().items():
        amount = spent(usage, metric)
        if amount > limit.limit:
            found.append(Crossing(scope, metric, amount, limit.limit, limit.mode))
    return found


def exhausted(scope: str, budget: Budget | None, usage: Mapping[str, Any] | None) -> list[Crossing]:
    """Each block limit already spent in full: nothing more may start under it."""
    if budget is None:
        return []
    found = []
    for metric, limit in budget.limits().items():
        amount = spent(usage, metric)
        if limit.mode == "block" and amount >= limit.limit:
            found.append(Crossing(scope, metric, amount, limit.limit, limit.mode))
    return found


def over_ceiling(budget: Budget | None, ceiling: Budget) -> Iterable[tuple[str, str]]:
    """(metric, why) for each limit that a policy's ceiling forbids: above it, only
    warning where the ceiling blocks, or missing where the ceiling has one. The caller
    fills in a missing one from the ceiling instead of refusing (see with_ceiling)."""
    for metric, cap in ceiling.limits().items():
        own = budget.limits().get(metric) if budget else None
        if own is None:
            continue
        if own.limit > cap.limit:
            yield metric, f"{_show(metric, own.limit)} is above the policy's ceiling " \
                f"of {_show(metric, cap.limit)}"  # fmt: skip
        elif own.mode == "warn" and cap.mode == "block":
            yield metric, "the policy's ceiling blocks; a workflow cannot make it only warn"


def with_ceiling(budget: Budget | None, ceiling: Budget | None) -> Budget | None:
    """The budget a run enforces: the workflow's own, with the policy's ceiling for
    each metric the workflow leaves unset."""
    if ceiling is None:
        return budget
    merged = {**ceiling.limits(), **(budget.limits() if budget else {})}
    return Budget(**merged)
