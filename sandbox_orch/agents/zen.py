"""zen configs brought over as workflows. Pure: parsed data in, a workflow as plain data
out, which then goes through the same validation, planning and admission as any
workflow file (never a side door).

zen (github.com/netra-systems/zen, the "zen Claude orchestrator") runs parallel Claude
Code instances from `{"instances": [...], "budget": {...}}`. Its format, as its
`zen_orchestrator.py` reads it (the `InstanceConfig` dataclass, `build_claude_command`
and `main`): an instance has `command` or `prompt` (command wins when both are given),
`name`, `description`, `permission_mode`, `output_format`, `allowed_tools`,
`session_id`, `clear_history`, `compact_history`, `pre_commands` and
`max_tokens_per_command`; the optional `budget` section has `overall_budget` (tokens),
`overall_cost_budget` (USD), `enforcement_mode` (warn, its default, or block),
`budget_type`, `disable_visuals`, `command_budgets` and `command_cost_budgets` (keyed by
an instance's slash command). zen ignores other top-level keys; its examples use
`"// Description"` keys as comments.

How each maps (docs/zen-migration.md says why):
- an instance is a `runtime: claude` node; all nodes are parallel, as in zen;
- the prompt is what zen hands `claude -p`: `pre_commands` then the command, joined by
  "; " (zen's pre_commands are prompt text and slash commands, not shell commands);
- `permission_mode`, `allowed_tools` become the node's `agent:` block;
- `max_tokens_per_command` (and a `command_budgets` entry for the instance) becomes the
  node's `budget: {tokens: ...}`; the budget section becomes the workflow's `budget:`;
  both in zen's enforcement mode (warn unless the config says block);
- the config's directory is mounted read-only at /workspace, the node's working
  directory, as zen runs each instance in its workspace (where `.claude/commands` is);
- `ANTHROPIC_BASE_URL` from the caller's environment (a gateway, as zen's instances
  inherit it) goes to every node's env; the policy must still grant its host.
Refused, with what to use instead: a `session_id`, `clear_history`/`compact_history`
true, an `output_format` other than stream-json, both `command` and `prompt`, a
command budget that is not one instance's, duplicate names, and unknown keys.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..errors import InputRefused, Problem
from ..workflow import MAX_NODES
from ..yamlsafe import Document, Loc
from .prompts import escape

INSTANCE_KEYS = (
    "name",
    "command",
    "prompt",
    "description",
    "permission_mode",
    "output_format",
    "allowed_tools",
    "session_id",
    "clear_history",
    "compact_history",
    "pre_commands",
    "max_tokens_per_command",
)
BUDGET_KEYS = (
    "overall_budget",
    "overall_cost_budget",
    "enforcement_mode",
    "budget_type",
    "disable_visuals",
    "command_budgets",
    "command_cost_budgets",
)
WORKSPACE = "/workspace"
BASE_URL_ENV = "ANTHROPIC_BASE_URL"
_NOT_NAME = re.compile(r"[^a-z0-9_-]+")
_MAX_NAME = 63


def is_zen(data: Any) -> bool:
    """A zen config: a mapping with `instances` that is not a workflow."""
    return isinstance(data, dict) and "instances" in data and not {"version", "nodes"} & set(data)


@dataclass(frozen=True)
class ImportedDocument(Document):
    """The workflow made from a zen config, located in that config: a problem found in
    the workflow (by validation, planning or admission) names the zen file, the zen
    field and its line, e.g. `cfg.json:7: instances[0].permission_mode: ...`."""

    source: Document | None = None
    origin: Mapping[Loc, Loc] = field(default_factory=dict, repr=False)

    def zen_loc(self, loc: Iterable[str | int]) -> Loc:
        loc = tuple(loc)
        for cut in range(len(loc), -1, -1):
            if loc[:cut] in self.origin:
                return _extend(self._source().data, self.origin[loc[:cut]], loc[cut:])
        return ()

    def line_of(self, loc: Iterable[str | int]) -> int | None:
        return self._source().line_of(self.zen_loc(loc))

    def problem(self, loc: Iterable[str | int], message: str) -> Problem:
        return self._source().problem(self.zen_loc(loc), message)

    def _source(self) -> Document:
        assert self.source is not None
        return self.source


def _extend(data: Any, base: Loc, rest: Loc) -> Loc:
    """`base` plus as much of `rest` as exists in the zen data (an index into a list the
    config wrote, say), so a problem points at the exact value when it can."""
    current: Any = data
    for part in base:
        current = current[part] if _has(current, part) else None
    out = list(base)
    for part in rest:
        if not _has(current, part):
            break
        out.append(part)
        current = current[part]
    return tuple(out)


def _has(value: Any, part: str | int) -> bool:
    if isinstance(value, dict):
        return part in value
    return isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value)


@dataclass(frozen=True)
class Imported:
    """A zen config as a workflow (plain data, for the strict models) and what the
    workflow has no field for: each node's description, kept as a comment."""

    workflow: dict[str, Any]
    document: ImportedDocument
    descriptions: dict[str, str]


def import_zen(source: Document, name: str, base_url: str | None = None) -> Imported:
    """The workflow equivalent to the zen config in `source`, or InputRefused listing
    every zen field that cannot mean the same thing here."""
    if base_url is not None and (why := _bad_base_url(base_url)):
        raise InputRefused([Problem(f"${BASE_URL_ENV}", None, "", why)])
    builder = _Builder(source)
    builder.top_level()
    instances = builder.instances()
    if len(instances) > MAX_NODES:
        builder.refuse(("instances",), f"at most {MAX_NODES} instances")
        raise InputRefused(builder.problems)
    budget = source.data.get("budget")
    mode = builder.mode(budget)
    nodes: dict[str, dict[str, Any]] = {}
    for index, instance in instances:
        node = builder.node(index, instance, mode)
        if node is not None:
            nodes[node[0]] = node[1]
    builder.budgets(budget, mode, nodes)
    if builder.problems:
        raise InputRefused(sorted(builder.problems, key=lambda p: (p.line or 0, p.field)))
    workflow: dict[str, Any] = {"version": 1, "name": name}
    if builder.run_budget:
        workflow["budget"] = builder.run_budget
    if base_url is not None:
        workflow["defaults"] = {"env": {BASE_URL_ENV: base_url}}
    workflow["nodes"] = nodes
    builder.origin[("nodes",)] = ("instances",)
    document = ImportedDocument(
        path=source.path,
        data=workflow,
        lines=source.lines,
        sha256=source.sha256,
        source=source,
        origin=builder.origin,
    )
    return Imported(workflow, document, builder.descriptions)


class _Builder:
    """Collects the nodes, the origin of each workflow field and every problem."""

    def __init__(self, source: Document) -> None:
        self.source = source
        self.problems: list[Problem] = []
        self.origin: dict[Loc, Loc] = {}
        self.descriptions: dict[str, str] = {}
        self.run_budget: dict[str, Any] = {}
        self.keys: dict[str, str] = {}  # zen's budget key of each instance -> node
        self.shared: set[str] = set()  # budget keys more than one instance has
        self.names: dict[str, int] = {}  # zen name -> instance index (duplicates)
        self.taken: set[str] = set()  # node names given so far
        self.suffixes: dict[str, int] = {}  # the next -N to try after a cleaned-up name

    def refuse(self, loc: Loc, message: str) -> None:
        self.problems.append(self.source.problem(loc, message))

    def top_level(self) -> None:
        for key in self.source.data:
            if isinstance(key, str) and key.startswith("//"):
                continue  # zen's own examples comment with "// ..." keys
            if key not in ("instances", "budget"):
                self.refuse((key,), "unknown key (a zen config has instances and budget)")

    def instances(self) -> list[tuple[int, dict[str, Any]]]:
        instances = self.source.data["instances"]
        if not isinstance(instances, list) or not instances:
            self.refuse(("instances",), "expected a list of at least one instance")
            return []
        found = []
        for index, instance in enumerate(instances):
            if isinstance(instance, dict):
                found.append((index, instance))
            else:
                self.refuse(("instances", index), "an instance is a mapping")
        return found

    def mode(self, budget: Any) -> str:
        """zen's enforcement mode, which applies to every budget of the config."""
        if not isinstance(budget, dict):
            return "warn"
        mode = budget.get("enforcement_mode", "warn")
        if mode not in ("warn", "block"):
            self.refuse(("budget", "enforcement_mode"), "expected warn or block")
            return "warn"
        return mode

    def node(
        self, index: int, instance: dict[str, Any], mode: str
    ) -> tuple[str, dict[str, Any]] | None:
        loc: Loc = ("instances", index)
        before = len(self.problems)
        for key in instance:
            if key not in INSTANCE_KEYS:
                self.refuse((*loc, key), "unknown key (see docs/zen-migration.md)")
        self._refuse_what_differs(loc, instance)
        task_key, task = self._task(loc, instance)
        pre = self._strings(loc, instance, "pre_commands")
        zen_name = self._zen_name(loc, instance, task)
        description = self._optional_string(loc, instance, "description")
        if len(self.problems) > before or task is None or zen_name is None:
            return None
        name = _node_name(zen_name, self.taken, self.suffixes)
        self.taken.add(name)
        node_loc: Loc = ("nodes", name)
        self.origin[node_loc] = loc
        # zen has no templates: a `${{` in its prompt is text, as zen would send it
        prompt = escape("; ".join([*pre, task]))
        node: dict[str, Any] = {"runtime": "claude", "prompt": prompt}
        self.origin[(*node_loc, "prompt")] = (*loc, task_key)
        agent = self._agent(loc, node_loc, instance)
        if agent:
            node["agent"] = agent
        tokens = instance.get("max_tokens_per_command")
        if tokens is not None:
            node["budget"] = {"tokens": {"limit": tokens, "mode": mode}}
            self.origin[(*node_loc, "budget")] = (*loc, "max_tokens_per_command")
        node["mounts"] = [{"source": ".", "target": WORKSPACE, "mode": "ro"}]
        node["workdir"] = WORKSPACE
        if description:
            self.descriptions[name] = description
        self._budget_key(task, name)
        return name, node

    def _refuse_what_differs(self, loc: Loc, instance: dict[str, Any]) -> None:
        session = instance.get("session_id")
        if session is not None:
            self.refuse(
                (*loc, "session_id"),
                "a Claude session lives and dies with its node's sandbox, so nothing can "
                "join or resume it: remove session_id; to hand one instance's answer to "
                "another, make the second a node that `needs` the first and reads "
                "nodes.NAME.outputs.result",
            )
        for key, why in (
            ("clear_history", "every node already starts with no history (a new sandbox)"),
            ("compact_history", "a node has no earlier conversation to compact"),
        ):
            value = instance.get(key)
            if value is True:
                self.refuse((*loc, key), f"{why}: remove {key} (false is accepted)")
            elif value not in (None, False):
                self.refuse((*loc, key), "expected true or false")
        output = instance.get("output_format")
        if output not in (None, "stream-json"):
            self.refuse(
                (*loc, "output_format"),
                "the claude runtime always reads stream-json (usage, budgets and the live "
                "view come from it); the result is in the node's outputs.result: remove "
                "output_format",
            )

    def _task(self, loc: Loc, instance: dict[str, Any]) -> tuple[str, str | None]:
        given = [key for key in ("command", "prompt") if instance.get(key) is not None]
        if not given:
            self.refuse(loc, "an instance needs a command or a prompt")
            return "command", None
        if len(given) == 2:
            self.refuse(
                (*loc, "prompt"),
                "give command or prompt, not both (zen silently ignores the prompt)",
            )
            return "command", None
        key = given[0]
        value = instance[key]
        if not isinstance(value, str) or not value.strip():
            self.refuse((*loc, key), "expected a non-empty string")
            return key, None
        return key, value

    def _strings(self, loc: Loc, instance: dict[str, Any], key: str) -> list[str]:
        value = instance.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.refuse((*loc, key), "expected a list of non-empty strings")
            return []
        return value

    def _optional_string(self, loc: Loc, instance: dict[str, Any], key: str) -> str | None:
        value = instance.get(key)
        if value is not None and not isinstance(value, str):
            self.refuse((*loc, key), "expected a string")
            return None
        return value

    def _zen_name(self, loc: Loc, instance: dict[str, Any], task: str | None) -> str | None:
        name = instance.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            self.refuse((*loc, "name"), "expected a non-empty string")
            return None
        if name is None and task is not None:
            # zen's default: the slash command, or the prompt's first 30 characters.
            name = task if task.startswith("/") else task[:30]
        if name is None:
            return None
        if name in self.names:
            self.refuse(
                (*loc, "name"),
                f"instances[{self.names[name]}] has the same name; zen would run only the "
                "last of them: give each instance its own name",
            )
            return None
        self.names[name] = int(loc[1])
        return name

    def _agent(self, loc: Loc, node_loc: Loc, instance: dict[str, Any]) -> dict[str, Any]:
        agent = {}
        for key in ("permission_mode", "allowed_tools"):
            if instance.get(key) is not None:
                agent[key] = instance[key]
                self.origin[(*node_loc, "agent", key)] = (*loc, key)
        if agent:
            self.origin[(*node_loc, "agent")] = loc
        return agent

    def _budget_key(self, task: str, name: str) -> None:
        """zen keys a command budget by the slash command's first word, or by the
        whole prompt (without a trailing ';')."""
        text = task.strip().rstrip(";")
        key = text.split()[0] if text.startswith("/") else text
        if key in self.keys:
            self.shared.add(key)
        self.keys[key] = name

    def budgets(self, budget: Any, mode: str, nodes: dict[str, dict[str, Any]]) -> None:
        if budget is None:
            return
        if not isinstance(budget, dict):
            self.refuse(("budget",), "expected a mapping")
            return
        for key in budget:
            if key not in BUDGET_KEYS:
                self.refuse(("budget", key), "unknown key (see docs/zen-migration.md)")
        if budget.get("budget_type", "tokens") not in ("tokens", "cost", "mixed"):
            self.refuse(("budget", "budget_type"), "expected tokens, cost or mixed")
        if budget.get("disable_visuals", False) not in (True, False):
            self.refuse(("budget", "disable_visuals"), "expected true or false")
        self.origin[("budget",)] = ("budget",)
        for zen_key, metric in (("overall_budget", "tokens"), ("overall_cost_budget", "usd")):
            if budget.get(zen_key) is not None:
                self.run_budget[metric] = {"limit": budget[zen_key], "mode": mode}
                self.origin[("budget", metric)] = ("budget", zen_key)
        for zen_key, metric in (("command_budgets", "tokens"), ("command_cost_budgets", "usd")):
            self._command_budgets(budget.get(zen_key), zen_key, metric, mode, nodes)

    def _command_budgets(
        self,
        budgets: Any,
        zen_key: str,
        metric: str,
        mode: str,
        nodes: dict[str, dict[str, Any]],
    ) -> None:
        if budgets is None:
            return
        if not isinstance(budgets, dict):
            self.refuse(("budget", zen_key), "expected a mapping from command to limit")
            return
        for command, limit in budgets.items():
            loc: Loc = ("budget", zen_key, command)
            name = self.keys.get(command)
            if command in self.shared:
                self.refuse(
                    loc,
                    "more than one instance runs this command; budgets here are per node "
                    "or per run: give each instance max_tokens_per_command instead",
                )
            elif name is None or name not in nodes:
                self.refuse(loc, "no instance runs this command")
            else:
                # zen lets an explicit command budget win over max_tokens_per_command.
                own = nodes[name].setdefault("budget", {})
                own[metric] = {"limit": limit, "mode": mode}
                self.origin[("nodes", name, "budget", metric)] = loc


def _bad_base_url(url: str) -> str | None:
    """Why the gateway URL from the environment cannot be used, or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a port out of range)
    except ValueError as error:
        return f"not a usable URL: {error}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "not a usable URL: expected http://HOST[:PORT] or https://HOST[:PORT]"
    return None


def _node_name(raw: str, taken: set[str], tried: dict[str, int]) -> str:
    """`raw` under the node-name rule ([a-z0-9][a-z0-9_-]*, at most 63), unique. `tried`
    keeps each base's next suffix, so many names that clean up alike stay linear."""
    base = _NOT_NAME.sub("-", raw.lower()).strip("-_")[:_MAX_NAME].rstrip("-_") or "instance"
    name = base
    while name in taken:
        number = tried.get(base, 2)
        tried[base] = number + 1
        suffix = f"-{number}"
        name = base[: _MAX_NAME - len(suffix)] + suffix
    return name
