"""Node and run states (CONTRACT 5)."""

from __future__ import annotations

from enum import StrEnum


class NodeStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    ERRORED = "errored"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self not in (NodeStatus.PENDING, NodeStatus.RUNNING)

    @property
    def unsuccessful(self) -> bool:
        """Ran and did not succeed: what `failure()` and fail_fast look at."""
        return self in (NodeStatus.FAILED, NodeStatus.TIMED_OUT, NodeStatus.ERRORED)


class RunStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ERRORED = "errored"
