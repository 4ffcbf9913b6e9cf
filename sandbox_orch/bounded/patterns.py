"""Regular expressions from a workflow, on RE2: matching takes time linear in the text,
whatever the pattern, so a pattern like `(a+)+$` cannot backtrack without bound. What RE2
does not offer (backreferences, lookaround) is refused when the workflow is validated."""

from __future__ import annotations

import functools
from typing import Any

import re2

from .limits import MAX_PATTERN_LENGTH, PATTERN_MEMORY


class PatternError(ValueError):
    """A pattern RE2 cannot compile, or one that is too long: the workflow is refused."""


@functools.lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> Any:
    """The compiled RE2 pattern (cached: a run applies the same few patterns often)."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise PatternError(f"is longer than {MAX_PATTERN_LENGTH} characters")
    options = re2.Options()
    options.log_errors = False  # RE2 would print to stderr: the refusal is our one line
    options.max_mem = PATTERN_MEMORY  # bounds the compiled program (e.g. `(a{999}){999}`)
    try:
        return re2.compile(pattern, options)
    except re2.error as error:
        raise PatternError(
            "is not a valid regular expression for RE2, which matches in linear time "
            f"(no backreferences or lookaround): {_message(error)}"
        ) from None


def search(pattern: str, text: str) -> Any:
    """`re.search` on RE2, for code that expects the `re` module's function."""
    return compile_pattern(pattern).search(text)


def _message(error: Exception) -> str:
    detail = error.args[0] if error.args else error
    return detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)
