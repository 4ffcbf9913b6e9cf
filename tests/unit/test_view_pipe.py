"""A view whose reader went away (`sandbox-orch run ... | head`) stops printing; the run
is never interrupted by it."""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime

import pytest

from sandbox_orch.events import RunStarted
from sandbox_orch.view import JsonView, PlainView


@pytest.mark.parametrize("view", [PlainView, JsonView])
def test_a_closed_pipe_ends_the_view_not_the_run(view):
    previous = signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as in Python programs
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (head) has gone
    out = os.fdopen(write_end, "w")
    try:
        show = view(out)
        event = RunStarted("run-1", "wf", ["a"], datetime.now(UTC))
        show(event)  # no BrokenPipeError
        show(event)  # and none later: the output now goes nowhere
        assert os.path.samefile(f"/proc/self/fd/{out.fileno()}", os.devnull)
    finally:
        out.close()
        signal.signal(signal.SIGPIPE, previous)
