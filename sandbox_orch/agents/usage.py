"""Usage: what an agent spent, as one record per attempt, added up per node and per run.

The JSON form (results, run store, events) keeps the contract's `input_tokens`,
`output_tokens` and `cost_usd`, and adds the cache split, the total, turns, tool calls
by name, the models seen, and where the cost came from: `reported` (the agent's own
figure, Claude Code's total_cost_usd), `priced` (tokens times agents/pricing.json) or
`unpriced` (a model the table does not list: cost_usd is null, never a guess).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .pricing import Table, cost

TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


@dataclass
class Tokens:
    """One model's tokens: input (uncached), output, cache reads and cache writes."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0

    def merge_max(self, other: Tokens) -> None:
        """A message's usage, seen again later in its stream: counts only grow."""
        self.input = max(self.input, other.input)
        self.output = max(self.output, other.output)
        self.cache_read = max(self.cache_read, other.cache_read)
        self.cache_write = max(self.cache_write, other.cache_write)

    def add(self, other: Tokens) -> None:
        self.input += other.input
        self.output += other.output
        self.cache_read += other.cache_read
        self.cache_write += other.cache_write

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_read + self.cache_write


@dataclass
class Usage:
    """One attempt's usage: tokens by model, turns, tool calls, and a reported cost."""

    by_model: dict[str, Tokens] = field(default_factory=dict)
    turns: int = 0
    tool_calls: Counter[str] = field(default_factory=Counter)
    reported_cost: float | None = None  # the agent's own figure, when it gives one

    def tokens(self) -> Tokens:
        total = Tokens()
        for tokens in self.by_model.values():
            total.add(tokens)
        return total

    def as_json(self, prices: Table) -> dict[str, Any]:
        tokens = self.tokens()
        amount, source = self._cost(prices)
        return {
            "input_tokens": tokens.input,
            "output_tokens": tokens.output,
            "cache_read_input_tokens": tokens.cache_read,
            "cache_creation_input_tokens": tokens.cache_write,
            "total_tokens": tokens.total,
            "cost_usd": amount,
            "cost_source": source,
            "turns": self.turns,
            "tool_calls": dict(sorted(self.tool_calls.items())),
            "models": sorted(m for m in self.by_model if m),
        }

    def _cost(self, prices: Table) -> tuple[float | None, str | None]:
        if self.reported_cost is not None:
            return round(self.reported_cost, 6), "reported"
        if not any(t.total for t in self.by_model.values()):
            return 0.0, None
        amount = 0.0
        for model, tokens in self.by_model.items():
            price = prices.price(model) if model else None
            if price is None:
                return None, "unpriced"
            amount += cost(price, tokens)
        return round(amount, 6), "priced"


def total(usages: Iterable[Mapping[str, Any] | None]) -> dict[str, Any]:
    """Several usages (JSON form) added up: attempts of a node, nodes of a run. A cost
    that some part could not give (unpriced) makes the sum a lower bound, and says so."""
    tokens = dict.fromkeys((*TOKEN_FIELDS, "total_tokens", "turns"), 0)
    tools: Counter[str] = Counter()
    models: set[str] = set()
    sources: set[str] = set()
    amount = 0.0
    for usage in usages:
        if not usage:
            continue
        for key in tokens:
            tokens[key] += int(usage.get(key) or 0)
        tools.update(usage.get("tool_calls") or {})
        models.update(usage.get("models") or ())
        amount += float(usage.get("cost_usd") or 0.0)
        if usage.get("cost_source"):
            sources.add(usage["cost_source"])
    return {
        **tokens,
        "cost_usd": round(amount, 6),
        "cost_source": "+".join(sorted(sources)) or None,
        "tool_calls": dict(sorted(tools.items())),
        "models": sorted(models),
    }


def spent_anything(usage: Mapping[str, Any] | None) -> bool:
    """Whether a usage is worth showing: any token, tool call or cost."""
    if not usage:
        return False
    return bool(usage.get("total_tokens") or usage.get("tool_calls") or usage.get("cost_usd"))
