"""CEL for `when` conditions and prompts: one cel-python Environment per process, made
on first use, whose parser is loaded from tables made ahead of time.

cel-python builds its LALR parser from the grammar in every process that makes an
Environment (about 0.1 s, paid by every command when it was made at import time). Its
tables depend only on the grammar and on lark, so they are generated once into tables.py
(`python -m sandbox_orch.cel.generate`; a unit test fails when they are stale) and
imported as ordinary code: Python's own bytecode cache makes that a few milliseconds.
No cache file is written at run time (a pickle in a shared directory would be code that
another local user could plant). When the installed lark or grammar is not the one the
tables were made from, cel-python builds its parser as before: slower, never different.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import celpy
    import lark


@functools.cache
def environment() -> celpy.Environment:
    """The process's Environment (it holds no state between compiles and programs)."""
    import celpy
    from celpy.celparser import CELParser

    if CELParser.CEL_PARSER is None:
        # Environment() builds the parser only when this class attribute is unset.
        CELParser.CEL_PARSER = load_parser()
    return celpy.Environment()


def load_parser() -> lark.Lark | None:
    """The parser cel-python would build, loaded from the tables; None if they were made
    from another lark or grammar."""
    import lark

    from . import tables

    if lark.__version__ != tables.LARK_VERSION or grammar_sha256() != tables.GRAMMAR_SHA256:
        return None
    return lark.Lark._load_from_dict(tables.DATA, tables.MEMO, **runtime_options())


def runtime_options() -> dict[str, Any]:
    """The options that are code, not data: given again when the tables are loaded."""
    import celpy
    from celpy.celparser import CELParser

    return {
        "lexer_callbacks": {"IDENT": CELParser.ambiguous_literals},
        "tree_class": celpy.InterpretedRunner.tree_node_class,
    }


def grammar_path() -> Path:
    import celpy

    return Path(celpy.__file__).parent / "cel.lark"


def grammar_sha256() -> str:
    return hashlib.sha256(grammar_path().read_bytes()).hexdigest()
