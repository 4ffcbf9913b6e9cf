"""Bounded capture of a node's output: the head and the tail, and a count of the middle.

A node may print gigabytes; the orchestrator keeps at most `limit` bytes per stream, so a
flood cannot grow its memory. The head is kept because it often says what went wrong
first, the tail because it says how things ended.
"""

from __future__ import annotations

from .backend import Stream

TAIL_CHARS = 4096  # how much of each stream goes into results as *_tail


class BoundedBuffer:
    def __init__(self, limit: int) -> None:
        self._head_limit = limit // 2
        self._tail_limit = limit - self._head_limit
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0

    def write(self, data: bytes) -> None:
        self.total += len(data)
        room = self._head_limit - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if not data:
            return
        if len(data) >= self._tail_limit:
            self._tail = bytearray(data[-self._tail_limit :])
            return
        self._tail += data
        # Trim lazily (at twice the limit) so each byte is moved a bounded number of times.
        if len(self._tail) > 2 * self._tail_limit:
            del self._tail[: len(self._tail) - self._tail_limit]

    @property
    def dropped(self) -> int:
        return self.total - len(self._head) - min(len(self._tail), self._tail_limit)

    @property
    def complete(self) -> bool:
        return self.dropped == 0

    def getvalue(self) -> bytes:
        """Everything kept; if anything was dropped, a marker says how much and where."""
        tail = bytes(self._tail[-self._tail_limit :]) if self._tail_limit else b""
        if self.dropped:
            marker = f"\n[sandbox-orch: {self.dropped} bytes of output dropped]\n".encode()
            return bytes(self._head) + marker + tail
        return bytes(self._head) + tail

    def tail(self, chars: int = TAIL_CHARS) -> str:
        """The last `chars` characters as text, marked if output was dropped before them."""
        text = self.getvalue()[-chars * 4 :].decode("utf-8", "replace")[-chars:]
        return text


class NodeOutput:
    """The sink a backend streams one container's stdout and stderr into."""

    def __init__(self, limit: int) -> None:
        self.stdout = BoundedBuffer(limit)
        self.stderr = BoundedBuffer(limit)

    def write(self, stream: Stream, data: bytes) -> None:
        (self.stdout if stream == "stdout" else self.stderr).write(data)
