"""Field descriptions from the models' source: the string under a field is its
description (as pydantic's `use_attribute_docstrings` reads it, but only when a schema is
asked for: that option parses every model's source at import, ~100 ms on each command)."""

from __future__ import annotations

import ast
import functools
import inspect
import itertools
import textwrap


@functools.cache
def attribute_docstrings(cls: type) -> dict[str, str]:
    """{field name: the string literal right under its annotated assignment}, for `cls`
    and the classes it inherits from (its own win)."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not _defined_in_source(klass):
            continue
        found.update(_own(klass))
    return found


def _defined_in_source(klass: type) -> bool:
    return klass.__module__.startswith("sandbox_orch.")


def _own(klass: type) -> dict[str, str]:
    try:
        source = inspect.getsource(klass)
    except (OSError, TypeError):  # installed without sources: a schema without descriptions
        return {}
    tree = ast.parse(textwrap.dedent(source))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for statement, following in itertools.pairwise(body):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[statement.target.id] = inspect.cleandoc(following.value.value)
    return docs
