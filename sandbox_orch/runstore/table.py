"""`sandbox-orch runs list` as aligned plain text. Pure."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from datetime import UTC, datetime

from .model import RunRow


def runs_table(rows: Iterable[RunRow]) -> str:
    """Aligned plain text for `sandbox-orch runs list` (see the module doc). Pure."""
    lines = [
        (
            _clean(row.run_id),
            _clean(row.workflow or "-"),
            _clean(row.status),
            _started(row.started_at),
            _duration(row.duration_s),
            f"{row.tokens:,}" if row.tokens is not None else "-",
            f"${row.cost_usd:.4f}" if row.cost_usd else "-",
        )
        for row in rows
    ]
    if not lines:
        return "no runs recorded"
    header = ("RUN ID", "WORKFLOW", "STATUS", "STARTED (UTC)", "DURATION", "TOKENS", "COST")
    table = [header, *lines]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    right = {4, 5, 6}
    return "\n".join(
        "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(line)
        ).rstrip()
        for line in table
    )


def _clean(text: str) -> str:
    return "".join("?" if unicodedata.category(c).startswith("C") else c for c in text)


def _started(value: str | None) -> str:
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return _clean(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return f"{moment:%Y-%m-%d %H:%M:%S}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
