"""`when` conditions in CEL (CONTRACT 5), on cel-python.

Compiled at validate time, where everything that can be known statically is checked:
the syntax, that every function is one we offer, that the only free identifier is
`nodes`, and that every node named is a need or an ancestor (so it is finished when the
condition is judged). Evaluation is pure: CEL has no I/O, and `matches()` is left out
because Python's regular expressions can backtrack without bound on a hostile pattern.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import celpy
import lark
from celpy import celtypes

STATUS_FUNCTIONS = frozenset({"success", "failure", "always", "cancelled"})
# Functions callable as f(x) besides the status functions; methods x.f(...) below.
GLOBAL_FUNCTIONS = frozenset({"size", "int", "uint", "double", "string", "bool", "has", "type"})
MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})  # bind their first arg
METHODS = frozenset({"contains", "startsWith", "endsWith", "size"}) | MACROS
MAX_LENGTH = 4096
_ENVIRONMENT = celpy.Environment()


class ConditionError(Exception):
    """A condition that cannot be compiled (exit 2) or evaluated (node `errored`)."""


@dataclass(frozen=True)
class Condition:
    source: str
    program: celpy.Runner
    status_aware: bool  # calls a status function; else it means success() && (source)
    handles_failure: bool  # calls failure() or always(): may start after a fail_fast halt
    references: frozenset[str]
    whole_nodes: bool = False  # uses `nodes` as a whole (size(nodes), nodes.all(...))


@dataclass(frozen=True)
class NeedsState:
    """What the status functions of one node's `when` see."""

    success: bool  # every need succeeded or is allowed to fail
    failure: bool  # some need failed, timed out or errored
    cancelled: bool  # the run was interrupted


def compile_condition(source: str, visible: set[str]) -> Condition:
    """Compile; `visible` are the node's needs and their ancestors."""
    if len(source) > MAX_LENGTH:
        raise ConditionError(f"a condition is limited to {MAX_LENGTH} characters")
    try:
        tree = _ENVIRONMENT.compile(source)
    except celpy.CELParseError as error:
        raise ConditionError(f"syntax error: {_first_line(error)}") from None
    called = _check_tree(tree, visible)
    named = list(_node_references(tree))
    references = frozenset(named)
    whole_nodes = _count_nodes_idents(tree) > len(named)
    for name in sorted(references - visible):
        raise ConditionError(f"refers to node {name!r}, which is not a need or an ancestor")
    functions = {name: _unset for name in STATUS_FUNCTIONS}
    return Condition(
        source=source,
        program=_ENVIRONMENT.program(tree, functions=functions),
        status_aware=bool(called & STATUS_FUNCTIONS),
        handles_failure=bool(called & {"failure", "always"}),
        references=references,
        whole_nodes=whole_nodes,
    )


def evaluate(condition: Condition, nodes: dict[str, dict[str, Any]], state: NeedsState) -> bool:
    """True or False; ConditionError if evaluation fails or gives a non-boolean."""
    functions: dict[str, Callable[[], celtypes.BoolType]] = {
        "success": lambda: celtypes.BoolType(state.success),
        "failure": lambda: celtypes.BoolType(state.failure),
        "always": lambda: celtypes.BoolType(True),
        "cancelled": lambda: celtypes.BoolType(state.cancelled),
    }
    program = _ENVIRONMENT.program(condition.program.ast, functions=functions)
    try:
        result = program.evaluate({"nodes": celpy.json_to_cel(nodes)})
    except celpy.CELEvalError as error:
        raise ConditionError(_eval_message(error)) from None
    except (RecursionError, MemoryError, ArithmeticError, TypeError, ValueError) as error:
        raise ConditionError(f"evaluation failed: {error}") from None
    if isinstance(result, celpy.CELEvalError):
        raise ConditionError(_eval_message(result))
    if not isinstance(result, celtypes.BoolType):
        raise ConditionError(f"must be true or false, not {type(result).__name__}")
    return bool(result)


def _unset() -> celtypes.BoolType:
    raise AssertionError("status functions are bound at evaluation")


def _check_tree(tree: lark.Tree, visible: set[str]) -> set[str]:
    """Refuse unknown functions and free identifiers; return the functions called."""
    called: set[str] = set()
    bound: set[str] = set()
    for node in tree.iter_subtrees():
        if node.data == "member_dot_arg":
            method = str(node.children[1])
            if method not in METHODS:
                raise ConditionError(f"unknown or disallowed method {method!r}")
            if method in MACROS and len(node.children) > 2:
                bound |= set(_idents(node.children[2], first_only=True))
        elif node.data == "ident_arg":
            name = str(node.children[0])
            if name not in STATUS_FUNCTIONS | GLOBAL_FUNCTIONS:
                raise ConditionError(f"unknown or disallowed function {name!r}")
            called.add(name)
    for node in tree.iter_subtrees():
        if node.data == "ident":
            name = str(node.children[0])
            if name != "nodes" and name not in bound:
                raise ConditionError(f"unknown name {name!r}: conditions see only `nodes`")
    return called


def _idents(exprlist: Any, first_only: bool) -> Iterator[str]:
    expressions = exprlist.children[:1] if first_only else exprlist.children
    for expression in expressions:
        for node in expression.iter_subtrees():
            if node.data == "ident":
                yield str(node.children[0])


def _node_references(tree: lark.Tree) -> Iterator[str]:
    """Names in `nodes.NAME` and `nodes["NAME"]` (the index must be a literal string)."""
    for node in tree.iter_subtrees():
        if node.data not in ("member_dot", "member_index") or not _is_nodes(node.children[0]):
            continue
        if node.data == "member_dot":
            yield str(node.children[1])
        else:
            yield _literal_string(node.children[1])


def _count_nodes_idents(tree: lark.Tree) -> int:
    return sum(
        1 for n in tree.iter_subtrees() if n.data == "ident" and str(n.children[0]) == "nodes"
    )


def _is_nodes(member: Any) -> bool:
    if not isinstance(member, lark.Tree) or member.data != "member":
        return False
    primary = member.children[0]
    if not isinstance(primary, lark.Tree) or primary.data != "primary":
        return False
    ident = primary.children[0]
    return isinstance(ident, lark.Tree) and ident.data == "ident" and ident.children[0] == "nodes"


def _literal_string(expression: Any) -> str:
    literals = [n.children[0] for n in expression.iter_subtrees() if n.data == "literal"]
    subtree_count = sum(1 for n in expression.iter_subtrees() if n.data in ("ident", "ident_arg"))
    if len(literals) == 1 and subtree_count == 0:
        token = str(literals[0])
        if token[:1] in "\"'" and token[-1:] == token[:1]:
            try:
                value = ast.literal_eval(token)
            except (SyntaxError, ValueError):
                value = None
            if isinstance(value, str):
                return value
    raise ConditionError('nodes[...] takes a literal node name, such as nodes["my-node"]')


def _first_line(error: Exception) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return " ".join(lines[:1]) or "invalid expression"


def _eval_message(error: Any) -> str:
    args = getattr(error, "args", ())
    return str(args[0]) if args else str(error)
