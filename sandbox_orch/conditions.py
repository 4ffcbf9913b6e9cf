"""`when` conditions in CEL (CONTRACT 5), on cel-python.

Compiled at validate time, where everything that can be known statically is checked:
the syntax, that every function is one we offer, that the only free identifier is
`nodes`, that every node named is a need or an ancestor (so it is finished when the
condition is judged), and a static cost limit (nesting depth, number and nesting of
comprehension macros, their iterations over literal lists). Evaluation is pure: CEL has
no I/O, and `matches()` is left out (cel-python would run it on Python's `re`).

Cost also depends on data (outputs of up to the policy's output size), so a condition
that can reach outputs or iterate is evaluated in the run's evaluation worker, under a
deadline and a memory limit (bounded/evaluator.py). Only a condition that is cheap by
construction is `inline`, judged on the event loop: no macro, no outputs, no indexing but
`nodes["name"]`, so it only ever sees a handful of scalars per node.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .bounded.limits import (
    MAX_CONDITION_DEPTH,
    MAX_CONDITION_LENGTH,
    MAX_LITERAL_ITERATIONS,
    MAX_MACRO_NESTING,
    MAX_MACROS,
)
from .cel import environment

if TYPE_CHECKING:
    import celpy
    import lark
    from celpy import celtypes

# celpy and lark are imported where they are used: a workflow without conditions is
# checked without them (the command line answers sooner).

STATUS_FUNCTIONS = frozenset({"success", "failure", "always", "cancelled"})
# Functions callable as f(x) besides the status functions; methods x.f(...) below.
GLOBAL_FUNCTIONS = frozenset({"size", "int", "uint", "double", "string", "bool", "has", "type"})
MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})  # bind their first arg
METHODS = frozenset({"contains", "startsWith", "endsWith", "size"}) | MACROS
MAX_LENGTH = MAX_CONDITION_LENGTH
# The fields of a node a condition sees that are small scalars (not `outputs`).
SCALAR_FIELDS = ("status", "exit_code", "duration", "attempts")


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
    inline: bool = True  # cheap by construction: judged on the event loop (see above)


@dataclass(frozen=True)
class NeedsState:
    """What the status functions of one node's `when` see."""

    success: bool  # every need succeeded or is allowed to fail
    failure: bool  # some need failed, timed out or errored
    cancelled: bool  # the run was interrupted


def compile_condition(source: str, visible: set[str]) -> Condition:
    """Compile; `visible` are the node's needs and their ancestors."""
    import celpy

    if len(source) > MAX_LENGTH:
        raise ConditionError(f"a condition is limited to {MAX_LENGTH} characters")
    try:
        tree = environment().compile(source)
    except celpy.CELParseError as error:
        raise ConditionError(f"syntax error: {_first_line(error)}") from None
    _check_depth(tree)  # first: the checks below are iterative, evaluation is not
    macros = _check_macros(tree)
    called = _check_tree(tree, visible)
    named = list(_node_references(tree))
    references = frozenset(named)
    whole_nodes = _count_nodes_idents(tree) > len(named)
    # Inline only if it cannot reach outputs: no macro, no `nodes` as a whole, no index
    # but `nodes["name"]` (so no computed `["out" + "puts"]`), and the word nowhere (a
    # conservative test: in a string literal it sends the condition to the worker too).
    indexes = sum(1 for n in tree.iter_subtrees() if n.data == "member_index")
    inline = not (macros or whole_nodes or "outputs" in source or indexes > _count_index(tree))
    for name in sorted(references - visible):
        raise ConditionError(f"refers to node {name!r}, which is not a need or an ancestor")
    functions = {name: _unset for name in STATUS_FUNCTIONS}
    return Condition(
        source=source,
        program=environment().program(tree, functions=functions),
        status_aware=bool(called & STATUS_FUNCTIONS),
        handles_failure=bool(called & {"failure", "always"}),
        references=references,
        whole_nodes=whole_nodes,
        inline=inline,
    )


def evaluate(condition: Condition, nodes: dict[str, dict[str, Any]], state: NeedsState) -> bool:
    """True or False; ConditionError if evaluation fails or gives a non-boolean."""
    from celpy import celtypes

    result = evaluate_value(condition, nodes, state)
    if not isinstance(result, celtypes.BoolType):
        raise ConditionError(f"must be true or false, not {type(result).__name__}")
    return bool(result)


def evaluate_value(
    condition: Condition, nodes: dict[str, dict[str, Any]], state: NeedsState | None = None
) -> Any:
    """The expression's CEL value, of any type (prompts take strings); ConditionError if
    evaluation fails. A `state` is only needed by an expression that calls a status
    function (prompts may not)."""
    import celpy
    from celpy import celtypes

    state = state or NeedsState(success=True, failure=False, cancelled=False)
    functions: dict[str, Callable[[], celtypes.BoolType]] = {
        "success": lambda: celtypes.BoolType(state.success),
        "failure": lambda: celtypes.BoolType(state.failure),
        "always": lambda: celtypes.BoolType(True),
        "cancelled": lambda: celtypes.BoolType(state.cancelled),
    }
    program = environment().program(condition.program.ast, functions=functions)
    try:
        result = program.evaluate({"nodes": celpy.json_to_cel(nodes)})
    except celpy.CELEvalError as error:
        raise ConditionError(_eval_message(error)) from None
    except MemoryError:
        raise ConditionError("evaluation ran out of memory") from None
    except (RecursionError, ArithmeticError, TypeError, ValueError) as error:
        raise ConditionError(f"evaluation failed: {error}") from None
    if isinstance(result, celpy.CELEvalError):
        raise ConditionError(_eval_message(result))
    return result


def _unset() -> celtypes.BoolType:
    raise AssertionError("status functions are bound at evaluation")


# -- the static cost limit --------------------------------------------------------------


def _check_depth(tree: lark.Tree) -> None:
    """cel-python evaluates recursively, a few frames per level of the parse tree."""
    import lark

    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_CONDITION_DEPTH:
            raise ConditionError(
                f"nested too deeply (more than {MAX_CONDITION_DEPTH} levels of its parse tree)"
            )
        stack.extend((c, depth + 1) for c in node.children if isinstance(c, lark.Tree))


def _check_macros(tree: lark.Tree) -> int:
    """At most MAX_MACROS comprehensions, nested at most MAX_MACRO_NESTING deep, and at
    most MAX_LITERAL_ITERATIONS iterations over literal lists; returns how many."""
    macros = [
        n for n in tree.iter_subtrees()
        if n.data == "member_dot_arg" and str(n.children[1]) in MACROS
    ]  # fmt: skip
    if len(macros) > MAX_MACROS:
        raise ConditionError(f"uses more than {MAX_MACROS} macros (all, exists, map, ...)")
    nesting: dict[int, int] = {}
    iterations: dict[int, int] = {}
    for macro in macros:  # iter_subtrees gives children before their parents
        inner = list(_macros_in_body(macro))
        nesting[id(macro)] = 1 + max((nesting[id(m)] for m in inner), default=0)
        size = _literal_size(macro.children[0])
        iterations[id(macro)] = size * max((iterations[id(m)] for m in inner), default=1)
    if max(nesting.values(), default=0) > MAX_MACRO_NESTING:
        raise ConditionError(
            f"nests macros (all, exists, map, ...) more than {MAX_MACRO_NESTING} deep"
        )
    if max(iterations.values(), default=0) > MAX_LITERAL_ITERATIONS:
        raise ConditionError(
            f"iterates more than {MAX_LITERAL_ITERATIONS} times over literal lists"
        )
    return len(macros)


def _macros_in_body(macro: lark.Tree) -> Iterator[lark.Tree]:
    """The macros inside a macro's arguments (its body), at any depth."""
    import lark

    if len(macro.children) < 3 or not isinstance(macro.children[2], lark.Tree):
        return
    for argument in macro.children[2].children[1:]:
        for node in argument.iter_subtrees():
            if node.data == "member_dot_arg" and str(node.children[1]) in MACROS:
                yield node


def _literal_size(receiver: Any) -> int:
    """Elements of a list or map literal a macro iterates over; 1 for anything else
    (data, bounded at run time)."""
    import lark

    node = receiver
    while isinstance(node, lark.Tree) and node.data not in ("list_lit", "map_lit"):
        trees = [c for c in node.children if isinstance(c, lark.Tree)]
        if len(trees) != 1 or len(node.children) != 1:
            return 1
        node = trees[0]
    if not isinstance(node, lark.Tree) or not node.children:
        return 1  # an empty literal: nothing to iterate, nothing to bound
    elements = len(node.children[0].children)
    return max(1, elements // 2 if node.data == "map_lit" else elements)


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


def _count_index(tree: lark.Tree) -> int:
    """How many `nodes["name"]` indexes the expression has."""
    return sum(
        1 for n in tree.iter_subtrees() if n.data == "member_index" and _is_nodes(n.children[0])
    )


def _count_nodes_idents(tree: lark.Tree) -> int:
    return sum(
        1 for n in tree.iter_subtrees() if n.data == "ident" and str(n.children[0]) == "nodes"
    )


def _is_nodes(member: Any) -> bool:
    import lark

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
