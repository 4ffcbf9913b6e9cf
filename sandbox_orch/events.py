"""What happens during a run, as values: the scheduler emits them, views render them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class RunStarted:
    run_id: str
    workflow: str
    nodes: list[str]
    at: datetime
    budget: dict[str, Any] | None = None  # the run's budget as enforced (agents)


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
    answer: str | None = None  # agent runtimes: the final answer


@dataclass(frozen=True)
class NodeUsage:
    """An agent node's spend so far (all its attempts), while it runs."""

    node: str
    attempt: int
    usage: dict[str, Any]
    activity: str | None  # its latest text or tool call, one escaped line
    at: datetime
    run_usage: dict[str, Any] | None = None  # the whole run's, at the same moment


@dataclass(frozen=True)
class BudgetWarning:
    """A `warn` budget crossed (reported once per budget and metric)."""

    scope: str  # "run", or the node's name
    metric: str
    spent: float
    limit: float
    reason: str
    at: datetime


@dataclass(frozen=True)
class RunFinished:
    run_id: str
    status: str
    at: datetime
    duration_s: float
    totals: dict[str, int] = field(default_factory=dict)
    results_path: str | None = None
    usage: dict[str, Any] | None = None  # summed over agent nodes


@dataclass(frozen=True)
class RunWaiting:
    """`run --start-at`: the run starts at `start_at`, `remaining_s` from `at`."""

    run_id: str
    start_at: datetime
    remaining_s: float
    at: datetime


@dataclass(frozen=True)
class NodeDelayed:
    """A due node waits `delay_s` before its container starts (`start_delay`, `--stagger`)."""

    node: str
    delay_s: float
    reason: str  # "start_delay" or "stagger"
    at: datetime


@dataclass(frozen=True)
class EgressUnreachable:
    """A node's granted egress target could not be reached (the proxy's connection to it
    failed): said at once, while the agent's CLI may retry in silence for minutes."""

    node: str
    target: str  # host:port
    reason: str  # "connection refused", "no answer in 10s", "x does not resolve (...)"
    at: datetime


Event = (
    RunStarted
    | NodeStarted
    | NodeFinished
    | NodeUsage
    | BudgetWarning
    | RunFinished
    | RunWaiting
    | NodeDelayed
    | EgressUnreachable
)
Emit = Callable[[Event], None]


_KINDS = {
    RunStarted: "run_started",
    NodeStarted: "node_started",
    NodeFinished: "node_finished",
    NodeUsage: "node_usage",
    BudgetWarning: "budget_warning",
    RunFinished: "run_finished",
    RunWaiting: "run_waiting",
    NodeDelayed: "node_delayed",
    EgressUnreachable: "egress_unreachable",
}


def event_json(event: Event) -> dict[str, Any]:
    body = {k: _plain(v) for k, v in asdict(event).items()}
    return {"event": _KINDS[type(event)], **body}


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return value
