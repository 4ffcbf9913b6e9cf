"""`--against` for the `agents:` section: what a change lets agent nodes set or spend.
A missing list of models or permission modes means any; a missing ceiling, none."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..agents.budgets import METRICS, Budget, Limit

if TYPE_CHECKING:
    from .changes import _Diff


def compare_agents(d: _Diff) -> None:
    for key, noun in (("models", "model"), ("permission_modes", "permission mode")):
        _compare_allowed(d, key, noun)
    old, new = d.old.agents.never_allow_tools, d.new.agents.never_allow_tools
    for index, tool in enumerate(old):
        if tool not in new:
            loc = ("agents", "never_allow_tools", index)
            d.widens_removed("agents", f"tool {tool} may be pre-approved again", loc)
    for index, tool in enumerate(new):
        if tool not in old:
            loc = ("agents", "never_allow_tools", index)
            d.narrows("agents", f"tool {tool} may never be pre-approved", loc)
    _compare_budget(d, d.old.agents.budget, d.new.agents.budget)


def _compare_allowed(d: _Diff, key: str, noun: str) -> None:
    old, new = getattr(d.old.agents, key), getattr(d.new.agents, key)
    if old == new:
        return
    if new is None:
        d.widens_removed("agents", f"any {noun} allowed (agents.{key} removed)", ("agents", key))
        return
    if old is None:
        d.narrows("agents", f"only {', '.join(new) or 'no'} {noun}s allowed", ("agents", key))
        return
    for index, item in enumerate(new):
        if item not in old:  # a new pattern may cover more than the old ones: say so
            d.widens("agents", f"{noun} {item} allowed", ("agents", key, index))
    for index, item in enumerate(old):
        if item not in new:
            loc = ("agents", key, index)
            d.narrows("agents", f"{noun} {item} no longer allowed", loc, removed=True)


def _compare_budget(d: _Diff, old: Budget | None, new: Budget | None) -> None:
    before = old.limits() if old else {}
    after = new.limits() if new else {}
    for metric in METRICS:
        was, now = before.get(metric), after.get(metric)
        loc = ("agents", "budget", metric)
        if was == now:
            continue
        if now is None:
            d.widens_removed("agents", f"no {metric} ceiling (was {_show(metric, was)})", loc)
        elif was is None:
            d.narrows("agents", f"{metric} ceiling {_show(metric, now)} added", loc)
        else:
            summary = f"{metric} ceiling {_show(metric, was)} -> {_show(metric, now)}"
            wider = now.limit > was.limit or (was.mode == "block" and now.mode == "warn")
            (d.widens if wider else d.narrows)("agents", summary, loc)


def _show(metric: str, limit: Limit | None) -> str:
    if limit is None:
        return "none"
    amount = f"{limit.limit:g}" if metric == "usd" else f"{int(limit.limit)}"
    return amount + (" (warn)" if limit.mode == "warn" else "")
