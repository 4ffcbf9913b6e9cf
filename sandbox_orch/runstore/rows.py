"""Between documents and table rows: results and nodes to row tuples, rows to RunRow. Pure."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..redaction import scrub, scrub_json
from .model import RunRow

_RUN_ROW = """SELECT run_id, workflow_name, status, started_at, duration_s,
    input_tokens, output_tokens, cost_usd FROM runs"""


def _run_row(row: tuple[Any, ...]) -> RunRow:
    run_id, workflow, status, started_at, duration_s, tokens_in, tokens_out, cost = row
    tokens = (
        None if tokens_in is None and tokens_out is None else (tokens_in or 0) + (tokens_out or 0)
    )
    return RunRow(run_id, workflow, status, started_at, duration_s, tokens, cost)


def _run_usage(results: dict[str, Any], nodes: dict[str, Any]) -> dict[str, Any] | None:
    usage = (results.get("totals") or {}).get("usage")
    if isinstance(usage, dict):
        return usage
    reported = [n.get("usage") for n in nodes.values() if isinstance(n.get("usage"), dict)]
    if not reported:
        return None
    return {
        key: sum((u.get(key) or 0) for u in reported)
        for key in ("input_tokens", "output_tokens", "cost_usd")
    }


def _node_row(run_id: str, name: str, node: dict[str, Any]) -> tuple[Any, ...]:
    usage = node.get("usage") if isinstance(node.get("usage"), dict) else {}
    return (
        run_id,
        name,
        _cell(node.get("status")),
        _cell(node.get("exit_code")),
        _cell(node.get("attempts")),
        _sortable(node.get("started_at")),
        _sortable(node.get("finished_at")),
        _cell(node.get("duration_s")),
        _cell(node.get("skip_reason")),
        _cell(node.get("reason")),
        _cell(node.get("runtime")),
        _cell(node.get("image")),
        _cell(usage.get("input_tokens")),
        _cell(usage.get("output_tokens")),
    )


def _attempt_rows(run_id: str, name: str, node: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (
            run_id,
            name,
            _cell(detail.get("attempt", index)),
            _cell(detail.get("status")),
            _cell(detail.get("exit_code")),
            _cell(detail.get("oom_killed")),
            _cell(detail.get("reason")),
            _sortable(detail.get("started_at")),
            _sortable(detail.get("finished_at")),
            _cell(detail.get("duration_s")),
        )
        for index, detail in enumerate(node.get("attempt_details") or [], start=1)
    ]


def _cell(value: Any) -> Any:
    """A value SQLite can hold as is: bool as 0/1, anything structured as JSON text."""
    if isinstance(value, str):
        return scrub(value)
    if value is None or isinstance(value, int | float):
        return int(value) if isinstance(value, bool) else value
    return scrub_json(value, ensure_ascii=False)


def _sortable(value: Any) -> Any:
    """Timestamps with a zone as UTC "...T01:03:49.786Z" (text order = time order)."""
    if not isinstance(value, str):
        return _cell(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    return _iso(moment) if moment.tzinfo is not None else value


def _iso(moment: datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
