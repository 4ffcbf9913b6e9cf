"""Showing untrusted text on one line.

Workflow names, reasons, condition sources and refused values can come from a workflow
or from a node's output. Printed as they are, a newline in them would start a line of
their choosing, which a CI runner may obey (GitHub Actions runs `::command::` lines from
any output). Every control character is shown escaped instead.
"""

from __future__ import annotations

import functools
import re


@functools.cache
def _control() -> re.Pattern[str]:
    # Compiled on first use, not at import: every command imports this module, and this
    # character class costs milliseconds to compile.
    return re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")


def one_line(text: str) -> str:
    """`text` with control characters (newlines included) shown as escapes."""
    return _control().sub(lambda m: m.group().encode("unicode_escape").decode(), text)
