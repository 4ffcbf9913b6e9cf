"""A node's `when` (CEL) and its needs as one Argo `depends` expression, exactly, or a
refusal saying why Argo cannot express it.

Argo judges a DAG task once every task its `depends` names has finished, then evaluates
the expression over their results (Succeeded, Failed, Errored, Skipped, Omitted); false
omits the task. sandbox-orch judges a node once its needs have finished (their ancestors
have too), over the same kind of facts. The correspondence of results:

  succeeded              <-> X.Succeeded
  failed or timed_out    <-> X.Failed     (Argo fails a task past its deadline)
  errored                <-> X.Errored
  skipped                <-> X.Skipped || X.Omitted   (`when` false / `depends` false)

So the translated subset is the one whose every term is a function of these results:
`success()`, `failure()`, `always()`, `true`/`false`, `nodes.X.status == / != 'S'`,
`nodes.X.status in ['S', ...]`, `!`, `&&`, `||` and parentheses. Each of those is total
(a status is always a string), so CEL's error cases never arise and the translation is
exact. Everything else is refused: outputs (parsed by the runner, unseen by Argo), exit
codes (Argo's `{{tasks.X.exitCode}}` is unset for a task that did not run, and a `when`
naming an unset variable waits forever), durations, attempts, cancelled(), arithmetic.

Walks the parsed CEL tree (cel-python's lark grammar), never the source text. Pure.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..conditions import STATUS_FUNCTIONS

SUCCEEDED, FAILED, ERRORED, SKIPPED, OMITTED = (
    "Succeeded",
    "Failed",
    "Errored",
    "Skipped",
    "Omitted",
)
FINISHED_RESULTS = (SUCCEEDED, FAILED, ERRORED, SKIPPED, OMITTED)
# Each status a finished node can have, as the Argo results that stand for it.
STATUS_RESULTS: dict[str, tuple[str, ...]] = {
    "succeeded": (SUCCEEDED,),
    "errored": (ERRORED,),
    "skipped": (SKIPPED, OMITTED),
}
FAILED_STATUSES = frozenset({"failed", "timed_out"})  # both are Argo's Failed
UNFINISHED_STATUSES = frozenset({"pending", "running", "cancelled"})
SUBSET = "only node statuses, success(), failure(), always(), !, && and || translate to Argo"


class Untranslatable(Exception):
    """Argo cannot express this condition (the message says why)."""


# -- a small boolean expression over task results ---------------------------------------


@dataclass(frozen=True)
class Const:
    value: bool


@dataclass(frozen=True)
class Result:
    task: str  # the Argo task's name
    result: str  # Succeeded, Failed, ...


@dataclass(frozen=True)
class Not:
    operand: Expr


@dataclass(frozen=True)
class Op:
    kind: str  # "&&" or "||"
    operands: tuple[Expr, ...]


Expr = Const | Result | Not | Op


def any_of(operands: Sequence[Expr]) -> Expr:
    return _join("||", operands)


def all_of(operands: Sequence[Expr]) -> Expr:
    return _join("&&", operands)


def _join(kind: str, operands: Sequence[Expr]) -> Expr:
    """`kind` over operands, flattened, constants folded away (`true || x` is true, ...),
    repeats dropped."""
    absorbing = kind == "||"  # true absorbs ||, false absorbs &&
    kept: list[Expr] = []
    for operand in operands:
        if isinstance(operand, Const):
            if operand.value == absorbing:
                return operand
            continue
        flat = operand.operands if isinstance(operand, Op) and operand.kind == kind else [operand]
        kept.extend(o for o in flat if o not in kept)  # `x && x` is x
    if not kept:
        return Const(not absorbing)
    return kept[0] if len(kept) == 1 else Op(kind, tuple(kept))


def negate(operand: Expr) -> Expr:
    if isinstance(operand, Const):
        return Const(not operand.value)
    if isinstance(operand, Not):
        return operand.operand
    return Not(operand)


def tasks_of(expr: Expr) -> set[str]:
    if isinstance(expr, Result):
        return {expr.task}
    if isinstance(expr, Not):
        return tasks_of(expr.operand)
    if isinstance(expr, Op):
        return set().union(*(tasks_of(o) for o in expr.operands))
    return set()


def render(expr: Expr) -> str:
    """Argo's syntax. Never a constant: Argo reads every word in `depends` as a task's
    name (callers fold constants away first)."""
    if isinstance(expr, Const):
        raise ValueError("a constant has no place in Argo's depends")
    if isinstance(expr, Result):
        return f"{expr.task}.{expr.result}"
    if isinstance(expr, Not):
        inner = render(expr.operand)
        return f"!{inner}" if isinstance(expr.operand, Result) else f"!({inner})"
    parts = [render(o) if not isinstance(o, Op) else f"({render(o)})" for o in expr.operands]
    return f" {expr.kind} ".join(parts)


# -- what the status functions and statuses mean ------------------------------------------


@dataclass(frozen=True)
class Need:
    task: str  # the need's Argo task name
    tolerated: bool  # allow_failure on the edge, or the need continues on failure


def finished(task: str) -> Expr:
    """True once `task` finished, whatever its result: makes Argo wait for it."""
    return any_of([Result(task, r) for r in FINISHED_RESULTS])


def unsuccessful(task: str) -> Expr:
    """failed, timed_out or errored (status.unsuccessful)."""
    return any_of([Result(task, FAILED), Result(task, ERRORED)])


def success(needs: Sequence[Need]) -> Expr:
    """Every need succeeded, or failed and may (scheduler._blocking_need)."""
    return all_of(
        [
            any_of([Result(n.task, SUCCEEDED), unsuccessful(n.task)])
            if n.tolerated
            else Result(n.task, SUCCEEDED)
            for n in needs
        ]
    )


def failure(needs: Sequence[Need]) -> Expr:
    """Some need failed, timed out or errored."""
    return any_of([unsuccessful(n.task) for n in needs])


def status_is(task: str, statuses: set[str], shown: str) -> Expr:
    """`nodes.X.status` is one of `statuses`, as Argo results."""
    unknown = statuses - set(STATUS_RESULTS) - FAILED_STATUSES - UNFINISHED_STATUSES
    if unknown:
        raise Untranslatable(f"{shown}: {sorted(unknown)[0]!r} is not a node status")
    unfinished = statuses & UNFINISHED_STATUSES
    if unfinished:
        raise Untranslatable(
            f"{shown}: a node a condition names has finished, so it is never "
            f"{sorted(unfinished)[0]!r}, and Argo has no such result"
        )
    if len(statuses & FAILED_STATUSES) == 1:
        raise Untranslatable(
            f"{shown}: Argo reports a timed-out task as Failed too; test both "
            "(status in ['failed', 'timed_out']) or use failure()"
        )
    wanted = {r for status in statuses - FAILED_STATUSES for r in STATUS_RESULTS[status]}
    if statuses & FAILED_STATUSES:
        wanted.add(FAILED)
    results = [Result(task, r) for r in FINISHED_RESULTS if r in wanted]
    return any_of(results)


# -- the CEL tree -----------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    needs: tuple[Need, ...]
    task_of: dict[str, str]  # node name -> Argo task name (every node the `when` may name)


def translate_condition(tree: Any, context: Context) -> Expr:
    """The `when`'s parsed tree (a lark Tree from cel-python) as an Expr. A node field
    Argo cannot see is refused first, wherever it is (the clearest reason)."""
    for node, field in _fields(tree):
        if field != "status":
            raise Untranslatable(_field_refusal(node, field))
    return _expr(tree, context)


def _fields(tree: Any) -> list[tuple[str, str]]:
    """Every `nodes.X.field` / `nodes["X"].field` in the tree, in source order."""
    found = []
    for outer in tree.iter_subtrees_topdown():
        if outer.data != "member_dot" or not _is_tree(outer.children[0], "member"):
            continue
        inner = outer.children[0].children[0]
        if not (_is_tree(inner, "member_dot") or _is_tree(inner, "member_index")):
            continue
        base = inner.children[0]
        if _is_tree(base, "member") and _is_nodes(base.children[0]):
            node = (
                str(inner.children[1]) if inner.data == "member_dot" else _string(inner.children[1])
            )
            found.append((node, str(outer.children[1])))
    return found


def _children(tree: Any) -> list[Any]:
    return list(tree.children)


def _is_tree(value: Any, data: str | None = None) -> bool:
    is_tree = hasattr(value, "data") and hasattr(value, "children")
    return is_tree and (data is None or value.data == data)


def _expr(tree: Any, ctx: Context) -> Expr:
    kind = tree.data
    children = [c for c in _children(tree) if c is not None]
    if kind == "expr":
        if len(children) != 1:
            raise Untranslatable(f"the conditional operator (a ? b : c): {SUBSET}")
        return _expr(children[0], ctx)
    if kind in ("conditionalor", "conditionaland"):
        operands = [_expr(c, ctx) for c in children]
        return any_of(operands) if kind == "conditionalor" else all_of(operands)
    if kind == "relation":
        if len(children) == 1:
            return _expr(children[0], ctx)
        return _relation(children[0], children[1], ctx)
    if kind in ("addition", "multiplication"):
        if len(children) != 1:
            raise Untranslatable(f"arithmetic: {SUBSET}")
        return _expr(children[0], ctx)
    if kind == "unary":
        if len(children) == 1:
            return _expr(children[0], ctx)
        if _is_tree(children[0], "unary_not"):
            return negate(_expr(children[1], ctx))
        raise Untranslatable(f"a negative number: {SUBSET}")
    if kind == "member":
        return _member(children[0], ctx)
    raise Untranslatable(f"{kind}: {SUBSET}")


def _member(tree: Any, ctx: Context) -> Expr:
    if _is_tree(tree, "primary"):
        return _primary(tree.children[0], ctx)
    field = _node_field(tree, ctx)
    if field is not None:
        node, name = field
        raise Untranslatable(_field_refusal(node, name))
    raise Untranslatable(f"{_describe(tree)}: {SUBSET}")


def _primary(tree: Any, ctx: Context) -> Expr:
    if _is_tree(tree, "paren_expr"):
        return _expr(tree.children[0], ctx)
    if _is_tree(tree, "ident_arg"):
        name = str(tree.children[0])
        arguments = [c for c in tree.children[1:] if c is not None]
        if name == "cancelled":
            raise Untranslatable(
                "cancelled(): a stopped Argo Workflow starts no further task, so no task "
                "can test for it"
            )
        if name in STATUS_FUNCTIONS and not arguments:
            if name == "always":
                return Const(True)
            return success(ctx.needs) if name == "success" else failure(ctx.needs)
        raise Untranslatable(f"{name}(): {SUBSET}")
    if _is_tree(tree, "literal"):
        token = tree.children[0]
        if getattr(token, "type", None) == "BOOL_LIT":
            return Const(str(token) == "true")
    raise Untranslatable(f"{_describe(tree)}: {SUBSET}")


def _relation(operator: Any, right: Any, ctx: Context) -> Expr:
    """`left OP right`, where `operator` is relation_eq(left) etc."""
    kind = operator.data
    left = operator.children[0]
    fields = [_field_in(left, ctx), _field_in(right, ctx)]
    for field in fields:
        if field is not None and field[1] != "status":
            raise Untranslatable(_field_refusal(*field))
    if kind in ("relation_eq", "relation_ne"):
        if fields[0] is not None and fields[1] is None:
            node, other = fields[0][0], right
        elif fields[1] is not None and fields[0] is None:
            node, other = fields[1][0], left
        else:
            raise Untranslatable(f"a comparison: {SUBSET} (compare nodes.X.status with a string)")
        value = _string(other)
        shown = f"nodes.{node}.status {'==' if kind == 'relation_eq' else '!='} {value!r}"
        matched = status_is(ctx.task_of[node], {value}, shown)
        return matched if kind == "relation_eq" else negate(matched)
    if kind == "relation_in" and fields[0] is not None:
        node = fields[0][0]
        values = _strings(right)
        shown = f"nodes.{node}.status in {values!r}"
        return status_is(ctx.task_of[node], set(values), shown)
    raise Untranslatable(f"the operator {_OPERATORS.get(kind, kind)}: {SUBSET}")


_OPERATORS = {
    "relation_lt": "<",
    "relation_le": "<=",
    "relation_gt": ">",
    "relation_ge": ">=",
    "relation_in": "in",
}


def _field_refusal(node: str, field: str) -> str:
    if field == "outputs":
        return (
            f"nodes.{node}.outputs: Argo cannot see a node's outputs (sandbox-orch's "
            "runner parses them from its stdout)"
        )
    if field == "exit_code":
        return (
            f"nodes.{node}.exit_code: Argo sets {{{{tasks.X.exitCode}}}} only for a task "
            "that ran, and a `when` naming an unset one waits forever; test "
            f"nodes.{node}.status instead"
        )
    return f"nodes.{node}.{field}: Argo has no result a task's `depends` can test for it"


def _field_in(tree: Any, ctx: Context) -> tuple[str, str] | None:
    """(node, field) when `tree` is exactly `nodes.X.field` or `nodes["X"].field`."""
    while _is_tree(tree) and tree.data in ("relation", "addition", "multiplication", "unary"):
        if len(tree.children) != 1:
            return None
        tree = tree.children[0]
    if _is_tree(tree, "member") and len(tree.children) == 1:
        return _node_field(tree.children[0], ctx)
    return None


def _node_field(tree: Any, ctx: Context) -> tuple[str, str] | None:
    """(node, field) for a member_dot tree over `nodes.X` / `nodes["X"]`, at any depth
    below (`nodes.X.outputs.coverage` is X's outputs)."""
    path: list[Any] = []
    while _is_tree(tree, "member_dot") or _is_tree(tree, "member_index"):
        path.append(tree)
        tree = tree.children[0].children[0] if _is_tree(tree.children[0], "member") else None
    if not path:
        return None
    innermost = path[-1]
    base = innermost.children[0]
    if not (_is_tree(base, "member") and _is_nodes(base.children[0])):
        return None
    if innermost.data == "member_dot":
        node = str(innermost.children[1])
    else:
        node = _string(innermost.children[1])
    if len(path) < 2 or not _is_tree(path[-2], "member_dot"):
        raise Untranslatable(f"nodes.{node} as a whole: {SUBSET}")
    if node not in ctx.task_of:  # compile_condition has refused it already
        raise Untranslatable(f"nodes.{node}: not a need or an ancestor")
    return node, str(path[-2].children[1])


def _is_nodes(primary: Any) -> bool:
    return (
        _is_tree(primary, "primary")
        and _is_tree(primary.children[0], "ident")
        and str(primary.children[0].children[0]) == "nodes"
    )


def _down_to(tree: Any, data: str) -> Any:
    """Through the grammar's single-child layers, down to a `data` node (or where the
    layers end)."""
    node = tree
    while _is_tree(node) and node.data != data:
        children = [c for c in node.children if c is not None]
        if len(children) != 1:
            break
        node = children[0]
    return node


def _string(tree: Any) -> str:
    """A string literal's value, through the grammar's single-child layers."""
    node = _down_to(tree, "literal")
    if _is_tree(node, "literal"):
        token = node.children[0]
        if getattr(token, "type", None) == "STRING_LIT":
            value = ast.literal_eval(str(token))
            if isinstance(value, str):
                return value
    raise Untranslatable(f"{_describe(tree)}: a status is compared with a string literal")


def _strings(tree: Any) -> list[str]:
    node = _down_to(tree, "list_lit")
    if _is_tree(node, "list_lit") and node.children and node.children[0] is not None:
        return [_string(item) for item in node.children[0].children]
    raise Untranslatable(f"{_describe(tree)}: `in` takes a list of status strings")


def _describe(tree: Any) -> str:
    """What a refused part is, in the user's words where we can."""
    while _is_tree(tree) and len([c for c in tree.children if c is not None]) == 1:
        child = next(c for c in tree.children if c is not None)
        if not _is_tree(child):
            break
        tree = child
    names = {
        "member_dot_arg": "a method call",
        "member_index": "indexing",
        "member_dot": "a field",
        "list_lit": "a list",
        "map_lit": "a map",
        "ident": "a name",
        "literal": "a literal",
        "member_object": "a message",
        "dot_ident": "a name",
        "dot_ident_arg": "a function call",
    }
    if _is_tree(tree, "literal"):
        return f"the literal {tree.children[0]}"
    return names.get(getattr(tree, "data", ""), str(getattr(tree, "data", tree)))
