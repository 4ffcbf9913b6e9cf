"""What happens during a run, as values: the scheduler emits them, views render them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class RunStarted:
    run_id: str
    workflow: str
    nodes: list[str]
    at: datetime


@dataclass(frozen=True)
class NodeStarted:
    node: str
    attempt: int
    at: datetime


@dataclass(frozen=True)
class NodeFinished:
    node: str
    status: str
    exit_code: int | None
    reason: str | None
    attempt: int
    duration_s: float | None
    at: datetime
    retrying: bool = False  # this attempt ended, another follows
    usage: dict[str, Any] | None = None  # agent runtimes: tokens and cost


@dataclass(frozen=True)
class RunFinished:
    run_id: str
    status: str
    at: datetime
    duration_s: float
    totals: dict[str, int] = field(default_factory=dict)
    results_path: str | None = None
    usage: dict[str, Any] | None = None  # summed over agent nodes


Event = RunStarted | NodeStarted | NodeFinished | RunFinished
Emit = Callable[[Event], None]
