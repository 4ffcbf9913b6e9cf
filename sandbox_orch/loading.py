"""Turn a workflow file into a validated `Workflow`, or one line per problem.

A zen config (agents/zen.py) is a workflow file too: it is imported as the equivalent
workflow, which is validated like any other, its problems located in the zen file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .agents.zen import BASE_URL_ENV, Imported, import_zen, is_zen
from .errors import InputRefused, Problem
from .workflow import Workflow
from .yamlsafe import Document, Loc, load_file

M = TypeVar("M", bound=BaseModel)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def load_workflow(path: Path, environ: Mapping[str, str] = os.environ) -> tuple[Document, Workflow]:
    document = load_file(path)
    if is_zen(document.data):
        document = import_zen_file(path, document, environ).document
    return document, validate_document(document, Workflow)


def import_zen_file(path: Path, document: Document, environ: Mapping[str, str]) -> Imported:
    """The zen config at `path` as a workflow named after the file. zen's instances
    inherit the caller's environment; here only a gateway (ANTHROPIC_BASE_URL) is
    taken from it, and the policy still decides whether its host may be reached."""
    name = _CONTROL.sub("_", f"zen-{path.stem}")[:128]  # a workflow name has none
    return import_zen(document, name, environ.get(BASE_URL_ENV) or None)


def validate_document(document: Document, model: type[M]) -> M:
    """Validate plain data against a model; map every error back to its file line."""
    try:
        return model.model_validate(document.data)
    except ValidationError as error:
        raise InputRefused(_problems(document, error)) from None


def _problems(document: Document, error: ValidationError) -> list[Problem]:
    # One problem per field: a union reports once per member ("not a string", "not a
    # list"), which reads better joined than as separate lines.
    by_field: dict[Loc, list[str]] = {}
    for item in error.errors(include_url=False):
        loc = data_loc(document.data, item["loc"])
        message = _message(item)
        messages = by_field.setdefault(loc, [])
        if message not in messages:
            messages.append(message)
    problems = [document.problem(loc, "; ".join(msgs)) for loc, msgs in by_field.items()]
    return sorted(problems, key=lambda p: (p.line or 0, p.field))


def data_loc(data: Any, loc: tuple[int | str, ...]) -> Loc:
    """Keep the parts of a pydantic loc that name real keys/indexes in the data.

    Pydantic adds union and discriminator tags (`'node'`, `'list[str]'`) that are not in
    the file; dropping them gives a path a user recognises and a line we can find.
    """
    out: list[str | int] = []
    current = data
    for part in loc:
        in_dict = isinstance(current, dict) and part in current
        in_list = isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        if in_dict or in_list:
            out.append(part)
            current = current[part]
    return tuple(out)


def _message(item: dict[str, Any]) -> str:
    kind = item["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return f"required key {item['loc'][-1]!r} is missing"
    message: str = item["msg"]
    return message.removeprefix("Value error, ")
