"""Waiting for `--start-at`: an await on the run's stop event (the one SIGINT/SIGTERM
set), never a busy loop; a countdown reported through a callback at a fixed interval.

The wall clock is read again at least once a minute, so a clock time is met even if the
machine slept or its clock was set meanwhile (a monotonic clock would drift from it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from ..errors import ExitCode, SandboxOrchError

RECHECK_S = 60.0  # the longest wait before the wall clock is read again


class StartCancelled(SandboxOrchError):
    """Interrupted while waiting to start: nothing was created; exit 130."""

    exit_code = ExitCode.INTERRUPTED


class Clock(Protocol):
    def now(self) -> datetime: ...

    async def wait(self, stop: asyncio.Event, seconds: float) -> bool:
        """Wait `seconds` or until `stop` is set; True if it was set."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def wait(self, stop: asyncio.Event, seconds: float) -> bool:
        try:
            async with asyncio.timeout(seconds):
                await stop.wait()
        except TimeoutError:
            return stop.is_set()
        return True


async def wait_until(
    target: datetime,
    stop: asyncio.Event,
    tick: Callable[[float], None],
    every: float | None,
    clock: Clock | None = None,
) -> bool:
    """Wait until `target`; call `tick(seconds left)` at once and then every `every`
    seconds (None: only at once). True once it is time, False if `stop` was set."""
    clock = clock or SystemClock()
    if stop.is_set():
        return False
    now = clock.now()
    tick(_left(target, now))
    next_tick = now.timestamp() + every if every else None
    while (left := _left(target, now)) > 0:
        step = min(left, RECHECK_S)
        if next_tick is not None:
            step = min(step, max(next_tick - now.timestamp(), 0.0))
        if await clock.wait(stop, step):
            return False
        now = clock.now()
        if next_tick is not None and now.timestamp() >= next_tick and _left(target, now) > 0:
            tick(_left(target, now))
            next_tick = now.timestamp() + (every or 0.0)  # no burst after a late wake
    return not stop.is_set()


def _left(target: datetime, now: datetime) -> float:
    return max((target - now).total_seconds(), 0.0)


def format_left(seconds: float) -> str:
    """`3725.2` -> `1h02m06s`; `59.1` -> `1m00s` (rounded up: never shows 0s early)."""
    whole = int(-(-seconds // 1))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
