"""`run --stagger DURATION`: consecutive agent starts at least DURATION apart. Pure.

Each agent node that is about to start (its needs done, its condition true, a slot
taken, its own `start_delay` waited) reserves the next start time: the later of now and
the previous reservation plus the stagger. So the k-th agent start of a run comes at
least k*stagger after the first, and a start that is already late is not delayed more.
Retries of a node are not staggered again (they have their own backoff).
"""

from __future__ import annotations


class StartPacer:
    def __init__(self, stagger: float) -> None:
        if stagger < 0:
            raise ValueError("stagger must not be negative")
        self.stagger = stagger
        self._next: float | None = None  # the earliest time of the next start

    def reserve(self, now: float) -> float:
        """Seconds to wait from `now` (a monotonic time) before this start."""
        start = now if self._next is None else max(now, self._next)
        self._next = start + self.stagger
        return start - now
