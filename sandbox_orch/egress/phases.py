"""Setup phase: a node's setup grants until its wrapper says setup ended, never after.

A node with `setup:` starts in phase setup: only its setup grants apply and its brokered
secrets are not added (a request to the broker is refused). Its wrapper in the container
(sandbox-orch-phases) kills everything setup left running, then sends one request to its
own socket: `POST /_phase/setup-ended/<exit code>`. That flip, accepted once, drops the
setup grants for good, cancels every connection the node has open, and switches to the
node's own grants and brokered secrets. Anything that flips again, or flips a node that
has no setup, is refused and recorded as a violation.

Setup code runs as the same user as the wrapper, so it can send the flip itself: it then
loses its setup grants at once, and the wrapper's own flip is refused (the node fails).
It cannot get the setup grants back, and nothing it starts survives the wrapper's kill.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import h11

from .grants import Grant
from .http import Refused

PREFIX = b"/_phase/"
_FLIP = re.compile(rb"/_phase/setup-ended/(0|[1-9][0-9]{0,2})")


def is_phase_request(request: h11.Request) -> bool:
    """For the proxy itself (origin form, as the wrapper sends it), not for a target."""
    return request.target.startswith(PREFIX)


def flip_exit_code(request: h11.Request) -> int:
    """The setup's exit code a flip reports (0-255); Refused for anything else."""
    match = _FLIP.fullmatch(request.target)
    if request.method != b"POST" or match is None or int(match.group(1)) > 255:
        # h11 admits only visible ASCII in both: decoding cannot fail.
        method, target = request.method.decode(), request.target.decode()[:100]
        raise Refused(400, f"bad phase request {method} {target}")
    return int(match.group(1))


@dataclass
class SetupPhase:
    """One attempt's setup phase: its grants until the flip, then what it ended with."""

    grants: frozenset[Grant]
    mark: int  # the node's violations before this attempt: those after it are setup's
    ended: bool = False
    exit_code: int | None = None
    ended_at: float | None = None  # time.monotonic() of the flip
    violations: list[dict[str, str]] = field(default_factory=list)
    flipped_again: bool = False  # a second flip came (setup code flipped it itself)

    def end(self, exit_code: int) -> None:
        self.ended, self.exit_code, self.ended_at = True, exit_code, time.monotonic()
