"""Errors the user sees, each tied to one exit code of the contract (CONTRACT 2)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from .text import one_line


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    REFUSED = 2
    INFRASTRUCTURE = 3
    INTERRUPTED = 130


@dataclass(frozen=True)
class Problem:
    """One reason an input is refused, located as precisely as we can."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        # A message may quote the refused input: keep it on one line (see text.py).
        where = f"{self.file}:{self.line}" if self.line else self.file
        field = f" {one_line(self.field)}:" if self.field else ""
        return f"{one_line(where)}:{field} {one_line(self.message)}"


class SandboxOrchError(Exception):
    """Base of every error that ends a command with a contract exit code."""

    exit_code: ExitCode = ExitCode.INFRASTRUCTURE


class InputRefused(SandboxOrchError):
    """The workflow, the policy or the command line asks for something refused: exit 2."""

    exit_code = ExitCode.REFUSED

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class InfrastructureError(SandboxOrchError):
    """The engine, an image or a runtime is missing or failed: exit 3."""

    exit_code = ExitCode.INFRASTRUCTURE
