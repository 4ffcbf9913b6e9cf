"""The evaluation worker: a child process of a run that parses node outputs and
evaluates conditions, one request at a time, on stdin/stdout frames (protocol.py).

It confines itself before it reads anything: an address-space limit (RLIMIT_AS), death
with its parent (PR_SET_PDEATHSIG), its own session (a terminal's Ctrl-C is the run's to
handle). It is killed by the run when an evaluation overruns its deadline; nothing it
holds needs cleaning up.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import signal
import sys
from typing import Any

from .protocol import read_frame, write_frame

_PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> None:
    memory, parent = int(argv[0]), int(argv[1])
    _die_with(parent)
    # Imported before the memory limit (imports are ours and bounded), used after it.
    from ..conditions import ConditionError, NeedsState, compile_condition, evaluate
    from ..parsing import ParseError, parse_output
    from ..workflow import ParseSpec

    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    requests, replies = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed by mistake must not corrupt the frames
    conditions: dict[tuple[str, frozenset[str]], Any] = {}

    def parse(header: dict[str, Any], body: bytes) -> dict[str, Any]:
        spec = ParseSpec.model_validate(header["spec"])
        parsed = parse_output(spec, body, header["complete"], header["limit"])
        return {"outputs": parsed.outputs, "usage": parsed.usage}

    def condition(header: dict[str, Any], body: bytes) -> bool:
        nodes = json.loads(body)
        key = (header["source"], frozenset(nodes))
        if key not in conditions:  # compiled once per run: a run has at most 1000 nodes
            conditions[key] = compile_condition(header["source"], set(nodes))
        return evaluate(conditions[key], nodes, NeedsState(*header["state"]))

    jobs = {"parse": parse, "condition": condition}
    write_frame(replies, {"ready": True})
    while (request := read_frame(requests)) is not None:
        header, body = request
        try:
            reply: dict[str, Any] = {"ok": jobs[header["job"]](header, body)}
        except (ParseError, ConditionError) as error:
            reply = {"error": str(error), "kind": "refused"}
        except MemoryError:
            reply = {"error": "memory", "kind": "memory"}
        except Exception as error:  # a bug, or input we did not foresee: still an answer
            reply = {"error": f"{type(error).__name__}: {error}", "kind": "internal"}
        del body
        try:
            write_frame(replies, reply)
        except MemoryError:  # the answer itself was too large to encode
            write_frame(replies, {"error": "memory", "kind": "memory"})


def _die_with(parent: int) -> None:
    """SIGKILL when the run's process ends, however it ends; ignore the terminal's ^C."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
