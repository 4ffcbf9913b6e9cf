"""The run store's values: its error and the rows it hands back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ExitCode, SandboxOrchError


class RunStoreError(SandboxOrchError):
    """The run store cannot be used as asked (newer schema, foreign file, locked, ...)."""

    exit_code = ExitCode.INFRASTRUCTURE


@dataclass(frozen=True)
class RunRow:
    run_id: str
    workflow: str | None
    status: str
    started_at: str | None
    duration_s: float | None
    tokens: int | None
    cost_usd: float | None


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    kind: str | None
    at: str | None
    body: dict[str, Any]
