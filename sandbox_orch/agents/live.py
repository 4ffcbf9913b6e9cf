"""Following an agent's stream while its container runs.

The backend writes output from its reader thread; this sink passes every byte on to the
attempt's bounded capture as before, and feeds stdout to the agent's stream reader.
When what the stream says changes, the event loop is told once (not once per chunk: a
call already pending covers later chunks), and reads a consistent snapshot under the
same lock. The reader's whole state outlives the capture's dropped middle, so usage is
exact however much the agent prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

from ..backend import Stream
from ..capture import NodeOutput
from .streams import AgentStream

Changed = Callable[[dict[str, Any], str | None], None]  # usage, latest activity


class LiveStream:
    """A NodeOutput sink that also follows an agent's stream."""

    def __init__(
        self, output: NodeOutput, reader: AgentStream, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.output = output
        self.reader = reader
        self._loop = loop
        self._lock = threading.Lock()
        self._pending = False
        self._changed: Changed | None = None

    def on_change(self, changed: Changed) -> None:
        self._changed = changed

    def write(self, stream: Stream, data: bytes) -> None:
        self.output.write(stream, data)
        if stream != "stdout":
            return
        with self._lock:
            changed = self.reader.feed(data)
            notify = changed and not self._pending
            self._pending = self._pending or changed
        if notify:
            with contextlib.suppress(RuntimeError):  # a closed loop: the run is over
                self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        usage, activity = self.snapshot()
        if self._changed is not None:
            self._changed(usage, activity)

    def snapshot(self) -> tuple[dict[str, Any], str | None]:
        with self._lock:
            self._pending = False
            return self.reader.usage_json(), self.reader.activity

    def finish(self) -> None:
        """The container's output ended: a last line without a newline counts too."""
        with self._lock:
            self.reader.finish()
