"""What tokens cost where an agent does not say: a table kept as a data file with its
date (pricing.json), so a price change is a reviewed one-line diff, not a code change."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

PRICING_FILE = Path(__file__).with_name("pricing.json")
PER = 1_000_000  # prices are per million tokens


@dataclass(frozen=True)
class Price:
    input: float
    output: float
    cache_read: float
    cache_write: float


@dataclass(frozen=True)
class Table:
    date: str
    models: dict[str, Price]
    defaults: dict[str, str]  # runtime -> the model its CLI uses when none is named

    def price(self, model: str) -> Price | None:
        """The model's price: its id as listed, or a dated or suffixed variant of one
        (`claude-opus-5-5-20260915`, `claude-opus-5-5[1m]`), the longest listed id first."""
        if model in self.models:
            return self.models[model]
        for listed in sorted(self.models, key=len, reverse=True):
            if model.startswith(listed) and model[len(listed)] in "-[@":
                return self.models[listed]
        return None


@cache
def table() -> Table:
    return table_from(json.loads(PRICING_FILE.read_text()))


def table_from(data: dict[str, Any]) -> Table:
    return Table(
        date=data["date"],
        models={name: Price(**price) for name, price in data["models"].items()},
        defaults=dict(data.get("defaults", {})),
    )


def cost(price: Price, tokens: Any) -> float:
    """USD for `tokens` (agents/usage.Tokens: input, output, cache_read, cache_write)."""
    return (
        tokens.input * price.input
        + tokens.output * price.output
        + tokens.cache_read * price.cache_read
        + tokens.cache_write * price.cache_write
    ) / PER
