"""The CEL parser loaded from generated tables (sandbox_orch/cel): the tables are those
the installed lark and grammar give, the loaded parser parses exactly as cel-python's own,
and conditions use it without building a grammar."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import celpy
import lark
import pytest
from celpy.celparser import CELParseError, CELParser

from sandbox_orch import cel
from sandbox_orch.cel import generate, tables

REGENERATE = "python -m sandbox_orch.cel.generate"
UNIT = Path(__file__).parent
REPO = UNIT.parents[1]


def test_the_tables_are_those_the_installed_lark_and_grammar_give():
    assert generate.TABLES.read_text(encoding="utf-8") == generate.tables_source(), (
        f"sandbox_orch/cel/tables.py is stale (lark or cel-python changed): run `{REGENERATE}`"
    )


def test_generating_twice_gives_the_same_text():
    # lark numbers states in the order of sets hashed by identity: the generator
    # renumbers them, or the test above would fail at random.
    first = generate.tables_source()
    assert generate.tables_source() == first


def _celpys_own_parser() -> lark.Lark:
    """The parser cel-python builds from its grammar (CELParser.__init__, debug on)."""
    saved = CELParser.CEL_PARSER
    CELParser.CEL_PARSER = None
    try:
        CELParser(tree_class=celpy.InterpretedRunner.tree_node_class)
        return CELParser.CEL_PARSER
    finally:
        CELParser.CEL_PARSER = saved


def _shape(tree: Any) -> list[Any]:
    """Everything a parse tree says, in order: rule names, token types and values,
    positions, and how many children each node has (iterative: trees may be deep)."""
    flat: list[Any] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, lark.Token):
            flat.append(
                (node.type, str(node), node.line, node.column, node.end_line, node.end_column,
                 node.start_pos, node.end_pos)
            )  # fmt: skip
            continue
        meta = node.meta
        where = None if meta.empty else (meta.line, meta.column, meta.end_line, meta.end_column)
        flat.append((type(node), str(node.data), where, len(node.children)))
        stack.extend(reversed(node.children))
    return flat


def _outcome(parser: lark.Lark, source: str) -> Any:
    """The tree, or the error as CELParser reports it (message, line, column)."""
    CELParser.CEL_PARSER, saved = parser, CELParser.CEL_PARSER
    try:
        return ("tree", _shape(CELParser().parse(source)))
    except CELParseError as error:
        return ("error", error.args, error.line, error.column)
    finally:
        CELParser.CEL_PARSER = saved


def _test_strings() -> list[str]:
    """Every string written in the conditions' and prompts' tests, and the expressions
    inside prompts' `${{ ... }}`: a corpus that grows with those tests."""
    found: list[str] = []
    for name in ("test_conditions.py", "test_prompts.py"):
        tree = ast.parse((UNIT / name).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.append(node.value)
                found.extend(re.findall(r"\$\{\{(.*?)\}\}", node.value, re.S))
    return found


CORPUS = [
    "true", "false", "null", "truex", "x.true", "-1", "0x1F", "1u", "1.5e-3", "-.5",
    "'s'", '"s"', "r'\\d'", "b'\\x00'", "'''a\nb'''", '"""x"""', "'\\u00e9\\U0001F600'",
    "'unterminated", "a ? b : c ? d : e", "!!a", "--1", "a.b.c[0]['k']", "{1: 2, 'a': [3]}",
    "[1, 2, 3].all(x, x > 0) && size(nodes) == 2", "nodes.a.outputs.n in [1, 2]",
    ".a.b", "a.b(c, d)", "f()", "type(null) == null_type", "1 + * 2", "(((1)))",
    "((((((((((1))))))))))" * 2, "a\n&&\nb // a comment\n", "\t a  ||  b ", "", " ",
    "1 2", "a..b", "é == 'é'", "nodes['x'].status == 'succeeded' ? 1 : 2",
    "[" * 60 + "]" * 60, "has(nodes.a.outputs.x)", "a % b / c * d - e + f < g <= h",
]  # fmt: skip


def test_the_loaded_parser_parses_exactly_as_celpys_own():
    loaded, own = cel.load_parser(), _celpys_own_parser()
    assert loaded is not None and loaded is not own
    corpus = CORPUS + _test_strings()
    assert len(corpus) > 150  # the tests' strings were found
    outcomes = {"tree": 0, "error": 0}
    for source in corpus:
        expected = _outcome(own, source)
        assert _outcome(loaded, source) == expected, source
        outcomes[expected[0]] += 1
    assert outcomes["tree"] > 50 and outcomes["error"] > 20  # both kinds were compared


def test_conditions_use_the_tables_and_build_no_grammar():
    # A child process: the Environment is made once per process. Building a grammar
    # (Lark(...)) is made to fail there; the loaded parser never calls it.
    program = (
        "import lark, celpy.celparser as p\n"
        "def refuse(*a, **k): raise AssertionError('a grammar was built')\n"
        "lark.Lark.__init__ = refuse\n"
        "from sandbox_orch import conditions\n"
        "assert p.CELParser.CEL_PARSER is None, 'made at import'\n"
        "c = conditions.compile_condition('nodes.a.exit_code == 0 && true', {'a'})\n"
        "state = conditions.NeedsState(success=True, failure=False, cancelled=False)\n"
        "print(conditions.evaluate(c, {'a': {'exit_code': 0}}, state))\n"
        "print(p.CELParser.CEL_PARSER.source_path)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "<deserialized>"]


@pytest.mark.parametrize("field", ["LARK_VERSION", "GRAMMAR_SHA256"])
def test_tables_made_from_another_lark_or_grammar_are_not_used(monkeypatch, field):
    monkeypatch.setattr(tables, field, "something else")
    assert cel.load_parser() is None  # cel-python then builds its own, as before


def test_only_plain_data_is_written():
    with pytest.raises(ValueError, match="does not print as a Python literal"):
        generate.literal("DATA", {"flags": re.M})
