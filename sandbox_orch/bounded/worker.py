"""The evaluation worker: a child process of a run that parses node outputs, evaluates
conditions and renders prompts, one request at a time, on stdin/stdout frames
(protocol.py).

It confines itself before it reads anything: an address-space limit (RLIMIT_AS), death
with its parent (PR_SET_PDEATHSIG), its own session (a terminal's Ctrl-C is the run's to
handle). It is killed by the run when an evaluation overruns its deadline; nothing it
holds needs cleaning up.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import os
import resource
import signal
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ..parsing import ParseError, parse_output
from .protocol import read_frame, write_frame

_PR_SET_PDEATHSIG = 1
_MAX_DETAIL = 200


@dataclass(frozen=True)
class _Spec:
    """A ParseSpec as parse_output reads it (validated by the run already): the worker
    starts faster without pydantic's models."""

    format: str
    pattern: str | None
    all: bool
    schema_: Any


class _Jobs:
    def __init__(self, with_conditions: bool) -> None:
        # cel-python takes a third of a second to build its parser: only when wanted.
        self._conditions: ModuleType | None = None
        self._prompts: ModuleType | None = None  # loaded with the first prompt
        self._compiled: dict[tuple[str, frozenset[str]], Any] = {}
        if with_conditions:
            self._load_conditions()

    def answer(self, header: dict[str, Any], body: bytes) -> dict[str, Any]:
        try:
            jobs = {"parse": self.parse, "condition": self.condition, "prompt": self.prompt}
            return {"ok": jobs[header["job"]](header, body)}
        except MemoryError:
            return {"error": "memory", "kind": "memory"}
        except Exception as error:
            if isinstance(error, self._refusals()):
                return {"error": str(error), "kind": "refused"}
            # A bug, or input nobody foresaw: still an answer, never a dead run. A long
            # message may quote the output at length: then only the kind of error.
            message = str(error)
            detail = f": {message}" if len(message) <= _MAX_DETAIL else ""
            return {"error": f"{type(error).__name__}{detail}", "kind": "internal"}

    def parse(self, header: dict[str, Any], body: bytes) -> dict[str, Any]:
        fields = header["spec"]
        spec = _Spec(fields["format"], fields["pattern"], fields["all"], fields["schema"])
        parsed = parse_output(spec, body, header["complete"], header["limit"])  # type: ignore[arg-type]
        return {"outputs": parsed.outputs, "usage": parsed.usage}

    def condition(self, header: dict[str, Any], body: bytes) -> bool:
        conditions = self._load_conditions()
        nodes = json.loads(body)
        key = (header["source"], frozenset(nodes))
        if key not in self._compiled:  # once per run and condition: at most 1000 nodes
            self._compiled[key] = conditions.compile_condition(header["source"], set(nodes))
        state = conditions.NeedsState(*header["state"])
        return bool(conditions.evaluate(self._compiled[key], nodes, state))

    def prompt(self, header: dict[str, Any], body: bytes) -> str:
        """A prompt with its expressions' values in place (agents/prompts.py)."""
        if self._prompts is None:
            self._load_conditions()
            self._prompts = importlib.import_module("..agents.prompts", __package__)
        return str(self._prompts.render(header["template"], json.loads(body), header["limit"]))

    def _load_conditions(self) -> ModuleType:
        if self._conditions is None:
            self._conditions = importlib.import_module("..conditions", __package__)
        return self._conditions

    def _refusals(self) -> tuple[type[Exception], ...]:
        """The errors that mean "the input is refused", with a complete message."""
        refusals: tuple[type[Exception], ...] = (ParseError,)
        if self._conditions is not None:
            refusals += (self._conditions.ConditionError,)
        if self._prompts is not None:
            refusals += (self._prompts.PromptError,)
        return refusals


def main(argv: list[str]) -> None:
    memory, parent, with_conditions = int(argv[0]), int(argv[1]), "conditions" in argv[2:]
    _die_with(parent)
    jobs = _Jobs(with_conditions)  # imports first: they are ours, and bounded
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    requests, replies = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed by mistake must not corrupt the frames
    write_frame(replies, {"ready": True})
    while (request := read_frame(requests)) is not None:
        reply = jobs.answer(*request)
        del request  # the body may be the policy's whole output size
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
