"""Bounded capture of a node's output: the head and the tail, and a count of the middle.

A node may print gigabytes; the orchestrator keeps at most `limit` bytes per stream, so a
flood cannot grow its memory. The head is kept because it often says what went wrong
first, the tail because it says how things ended. The tail is a ring: memory is exactly
its size, and each byte written is copied once.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .backend import Stream

if TYPE_CHECKING:
    from .redaction import Redactor

TAIL_CHARS = 4096  # how much of each stream goes into results as *_tail

# Where the middle was dropped: a cut on both sides (see Redactor.cut).
DROPPED = re.compile(r"\n\[sandbox-orch: \d+ bytes of output dropped\]\n")


def dropped_marker(count: int) -> bytes:
    return f"\n[sandbox-orch: {count} bytes of output dropped]\n".encode()


class BoundedBuffer:
    def __init__(self, limit: int) -> None:
        self._head_limit = limit // 2
        self._head = bytearray()
        # The ring grows to its size as output arrives (most nodes print little), then
        # wraps: `_ring_end` is where the next byte goes, which is also the oldest byte.
        self._ring_size = limit - self._head_limit
        self._ring = bytearray()
        self._ring_end = 0
        self.total = 0

    def write(self, data: bytes) -> None:
        self.total += len(data)
        room = self._head_limit - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if not data or not self._ring_size:
            return
        if len(data) >= self._ring_size:
            self._ring = bytearray(data[-self._ring_size :])
            self._ring_end = 0
            return
        growth = min(len(data), self._ring_size - len(self._ring))
        if growth:
            self._ring += data[:growth]
            data = data[growth:]
            self._ring_end = len(self._ring) % self._ring_size
        if data:  # full: overwrite the oldest bytes
            first = min(len(data), self._ring_size - self._ring_end)
            self._ring[self._ring_end : self._ring_end + first] = data[:first]
            self._ring[: len(data) - first] = data[first:]
            self._ring_end = (self._ring_end + len(data)) % self._ring_size

    @property
    def _ring_used(self) -> int:
        return len(self._ring)

    def _tail_bytes(self, count: int | None = None) -> bytes:
        count = self._ring_used if count is None else min(count, self._ring_used)
        if not count:
            return b""
        start = (self._ring_end - count) % len(self._ring)
        if start + count <= len(self._ring):
            return bytes(self._ring[start : start + count])
        return bytes(self._ring[start:]) + bytes(self._ring[: (start + count) % len(self._ring)])

    @property
    def dropped(self) -> int:
        return self.total - len(self._head) - self._ring_used

    @property
    def complete(self) -> bool:
        return self.dropped == 0

    def getvalue(self) -> bytes:
        """Everything kept; if anything was dropped, a marker says how much and where."""
        marker = dropped_marker(self.dropped) if self.dropped else b""
        return bytes(self._head) + marker + self._tail_bytes()

    def tail(self, chars: int = TAIL_CHARS, redactor: Redactor | None = None) -> str:
        """The last `chars` characters as text (never copying more than it needs).

        With a redactor, secrets are redacted before the text is cut to `chars`, and a
        part of one at a cut (where the kept bytes begin, either side of a dropped
        middle) is redacted too: a cut must not keep most of a secret."""
        want = chars * 4  # UTF-8: at most 4 bytes a character
        kept = self._tail_bytes(want)
        if len(kept) < want and not self.dropped:
            kept = bytes(self._head[-(want - len(kept)) :]) + kept
        elif len(kept) < want:
            marker = dropped_marker(self.dropped)
            kept = bytes(self._head[-(want - len(kept)) :]) + marker + kept
        text = kept.decode("utf-8", "replace")
        if redactor:
            text = redactor.cut(text, DROPPED)
        return text[-chars:]


class NodeOutput:
    """The sink a backend streams one container's stdout and stderr into."""

    def __init__(self, limit: int) -> None:
        self.stdout = BoundedBuffer(limit)
        self.stderr = BoundedBuffer(limit)

    def write(self, stream: Stream, data: bytes) -> None:
        (self.stdout if stream == "stdout" else self.stderr).write(data)
