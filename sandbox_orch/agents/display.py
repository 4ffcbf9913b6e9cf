"""Agent spend and activity as short text, for every view (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..text import one_line
from .budgets import METRICS, spent

ANSWER_LINES = 3
ANSWER_CHARS = 200
BAR_WIDTH = 20


def count(value: float) -> str:
    """1234567 -> 1.2M: a token count at a glance."""
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return str(int(value))


def usage_text(usage: Mapping[str, Any] | None) -> str:
    """`1.2k in / 300 out tokens (cache 10k read, 2k written), $0.0123, 4 tool calls`."""
    if not usage:
        return ""
    tokens_in, tokens_out = usage.get("input_tokens") or 0, usage.get("output_tokens") or 0
    text = f"{count(tokens_in)} in / {count(tokens_out)} out tokens"
    read, written = (
        usage.get("cache_read_input_tokens") or 0,
        usage.get("cache_creation_input_tokens") or 0,
    )
    if read or written:
        text += f" (cache {count(read)} read, {count(written)} written)"
    text += cost_text(usage)
    calls = sum((usage.get("tool_calls") or {}).values())
    if calls:
        text += f", {calls} tool call{'s' if calls != 1 else ''}"
    return text


def cost_text(usage: Mapping[str, Any] | None) -> str:
    usage = usage or {}
    amount = usage.get("cost_usd")
    if amount:
        estimated = " est." if usage.get("cost_source") == "priced" else ""
        shown = f"{amount:.4f}" if amount >= 0.01 else f"{amount:.6f}"
        return f", ${shown}{estimated}"
    if usage.get("cost_source") == "unpriced":
        return ", cost unknown (unpriced model)"
    return ""


def tools_text(usage: Mapping[str, Any] | None, most: int = 3) -> str:
    """`Bash 3, Edit 2, +1 more`."""
    calls = (usage or {}).get("tool_calls") or {}
    ranked = sorted(calls.items(), key=lambda item: (-item[1], item[0]))
    shown = ", ".join(f"{one_line(name)} {n}" for name, n in ranked[:most])
    return shown + (f", +{len(ranked) - most} more" if len(ranked) > most else "")


def answer_lines(answer: str | None) -> list[str]:
    """The first lines of an agent's final answer, each one escaped line."""
    if not answer:
        return []
    lines = [line for line in answer.strip().splitlines() if line.strip()]
    shown = [one_line(line)[:ANSWER_CHARS] for line in lines[:ANSWER_LINES]]
    if len(lines) > ANSWER_LINES:
        shown.append(f"... ({len(lines) - ANSWER_LINES} more lines)")
    return shown


def budget_bars(budget: Mapping[str, Any] | None, usage: Mapping[str, Any] | None) -> list[str]:
    """`usd    [########------------] $0.21 of $0.50 (block)`, one per limit."""
    lines = []
    for metric in METRICS:
        limit = (budget or {}).get(metric)
        if not limit:
            continue
        amount, cap = spent(usage, metric), float(limit["limit"])
        filled = min(BAR_WIDTH, int(BAR_WIDTH * amount / cap)) if cap else BAR_WIDTH
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        shown = (
            f"${amount:.2f} of ${cap:.2f}"
            if metric == "usd"
            else f"{count(amount)} of {count(cap)}"
        )
        lines.append(f"{metric:<10} [{bar}] {shown} ({limit['mode']})")
    return lines
