"""What `single` says at the end, for people (pure): the agent's final answer in full, or
on failure why, in its own words where it gave any, else the tail of its stderr (and of
its stdout, for a command).

All of it is untrusted (the agent, or what it ran, wrote it): every line is escaped
(`one_line`) and begins with our own prefix, so no line is of its choosing (a CI runner
obeys `::command::` lines), and it is bounded (the results file holds the rest).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..runtimes import is_agent
from ..text import one_line

MAX_LINES = 200  # of an answer or of the agent's error text
STDERR_LINES = 10
STDOUT_LINES = 20  # of a failed command's (not an agent's)
LINE_CHARS = 1000
PREFIX = "  | "
FAILED = ("failed", "timed_out", "errored")
AGENT_SAID = "the agent reported: "


def closing_lines(node: Mapping[str, Any], results_path: str | None = None) -> list[str]:
    """The lines to print after the run for the `single` node's results entry."""
    status = node.get("status")
    outputs = node.get("outputs") or {}
    text = outputs.get("result")
    text = text if isinstance(text, str) and text.strip() else ""
    if status == "succeeded":
        return _block("answer:", text, MAX_LINES, results_path) if text else []
    if status not in FAILED:
        return []
    reason = str(node.get("reason") or status)
    lines = [f"error: {one_line(reason)}"]
    if outputs.get("is_error") is True and text and one_line(text.strip()) not in reason:
        return lines + _block("the agent said:", text, MAX_LINES, results_path)
    if not reason.startswith(AGENT_SAID):
        if not is_agent(str(node.get("runtime"))):  # a command's story (a test run's) is
            stdout = str(node.get("stdout_tail") or "")  # often on stdout; an agent's is JSON
            lines += _block("stdout (last lines):", stdout, -STDOUT_LINES, results_path)
        stderr = str(node.get("stderr_tail") or "")
        lines += _block("stderr (last lines):", stderr, -STDERR_LINES, results_path)
    return lines


def _block(title: str, text: str, most: int, results_path: str | None) -> list[str]:
    """`title` and the text's non-blank lines, prefixed: the first `most` (the last
    -`most` when negative), each at most LINE_CHARS."""
    lines = [line.rstrip() for line in text.strip("\n").splitlines()]
    lines = [line for line in lines if line.strip()]
    if not lines:
        return []
    shown = lines[most:] if most < 0 else lines[:most]
    body = [PREFIX + _cut(line) for line in shown]
    left = len(lines) - len(shown)
    if left and most > 0:
        where = f" in {results_path}" if results_path else ""
        body.append(f"{PREFIX}... ({left} more lines{where})")
    return [title, *body]


def _cut(line: str) -> str:
    shown = one_line(line)
    return shown if len(shown) <= LINE_CHARS else shown[:LINE_CHARS] + "..."
