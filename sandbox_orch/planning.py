"""From a validated workflow to a plan: flat nodes, resolved edges, an order. Pure.

Sequence groups become chains here, defaults are merged into every node, and every
reference is checked, so the scheduler only ever sees a well-formed acyclic graph.
"""

from __future__ import annotations

import dataclasses
import graphlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .agents.flags import agent_flags, conflicts
from .agents.prompts import PromptError, PromptTemplate, compile_template, literal, split
from .conditions import Condition, ConditionError, compile_condition
from .errors import InputRefused, Problem
from .runtimes import DEFAULT_RUNTIME, PRESETS, Runtime, agent_argv, argv_for, runtimes_of
from .workflow import (
    NODE_NAME,
    Group,
    Need,
    NodeFields,
    ParseSpec,
    Resources,
    Retries,
    Workflow,
)
from .yamlsafe import Document, Loc


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    allow_failure: bool = False


@dataclass(frozen=True)
class ArtifactOut:
    name: str
    path: str  # where the producer writes it (its own volume)


@dataclass(frozen=True)
class ArtifactIn:
    producer: str
    name: str
    path: str  # where the consumer sees it, read-only


@dataclass(frozen=True)
class PlannedNode:
    """One node as the workflow requests it, defaults merged in (the policy decides later)."""

    name: str
    loc: Loc
    request: NodeFields
    runtime: Runtime
    argv: tuple[str, ...]
    needs: tuple[Edge, ...]
    when: str | None
    continue_on_failure: bool
    timeout: float | None
    resources: Resources
    retries: Retries | None
    env: dict[str, str]
    parse: ParseSpec = field(default_factory=ParseSpec)
    egress: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    artifacts: tuple[ArtifactOut, ...] = ()
    inputs: tuple[ArtifactIn, ...] = ()
    group: str | None = None
    condition: Condition | None = None
    visible: frozenset[str] = frozenset()  # needs and their ancestors: what `when` may see
    # A prompt with `${{ ... }}`: rendered at launch into argv[prompt.slot] (which holds
    # the template until then, so `plan` shows the template, never a value).
    prompt: PromptTemplate | None = None
    # `setup:`: its argv (a string goes to /bin/sh -c; no runtime entrypoint) and egress.
    setup_argv: tuple[str, ...] = ()
    setup_egress: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    workflow: Workflow
    document: Document
    nodes: dict[str, PlannedNode]  # in a topological order
    levels: list[list[str]] = field(default_factory=list)

    @property
    def edges(self) -> list[Edge]:
        return [edge for node in self.nodes.values() for edge in node.needs]


@dataclass(frozen=True)
class _Entry:
    """A node before its needs are resolved: where it is and what it asks."""

    name: str
    loc: Loc
    fields: NodeFields
    needs: list[str | Need]
    needs_loc: Loc
    when: str | None
    continue_on_failure: bool
    group: str | None


def make_plan(document: Document, workflow: Workflow) -> Plan:
    problems: list[Problem] = []
    entries, group_tails = _expand(document, workflow, problems)
    runtimes = runtimes_of(workflow)
    _check_custom_runtimes(document, workflow, problems)
    planned = {}
    for entry in entries.values():
        needs = _resolve_needs(document, entry, entries, group_tails, problems)
        node = _plan_node(document, workflow, entry, needs, runtimes, problems)
        if node:
            planned[entry.name] = node
    if problems:
        raise InputRefused(problems)
    order, levels = _order(document, planned)
    ordered = {name: planned[name] for name in order}
    # Ancestor sets cost O(n^2) on long chains: build them only if something reads them.
    if any(node.when is not None or node.inputs or node.prompt for node in ordered.values()):
        ancestors = _ancestors(ordered)
        ordered = _with_conditions(document, ordered, ancestors)
        ordered = _with_prompts(document, ordered, ancestors)
        _check_inputs(document, ordered, ancestors)
    _check_artifact_names(document, ordered)
    _load_schemas(document, ordered)
    return Plan(workflow, document, ordered, levels)


def _load_schemas(document: Document, nodes: dict[str, PlannedNode]) -> None:
    """Output schemas are read and checked now, so a bad one is exit 2, not a failed run."""
    if all(node.parse.schema_ is None for node in nodes.values()):
        return  # without importing jsonschema: the command line answers sooner
    from .schemas import SchemaProblem, load_schema

    problems: list[Problem] = []
    workflow_dir = Path(document.path).resolve().parent
    for name, node in nodes.items():
        if node.parse.schema_ is None:
            continue
        try:
            schema = load_schema(node.parse.schema_, workflow_dir)
        except SchemaProblem as problem:
            problems.append(
                document.problem((*node.loc, "outputs", "parse", "schema"), str(problem))
            )
            continue
        parse = node.parse.model_copy(update={"schema_": schema})
        nodes[name] = dataclasses.replace(node, parse=parse)
    if problems:
        raise InputRefused(problems)


def _check_artifact_names(document: Document, nodes: dict[str, PlannedNode]) -> None:
    problems = [
        document.problem(
            (*node.loc, "outputs", "artifacts", index), f"duplicate artifact {a.name!r}"
        )
        for node in nodes.values()
        for index, a in enumerate(node.artifacts)
        if a.name in {b.name for b in node.artifacts[:index]}
    ]
    if problems:
        raise InputRefused(problems)


def _check_inputs(
    document: Document, nodes: dict[str, PlannedNode], ancestors: dict[str, frozenset[str]]
) -> None:
    """Inputs come from an ancestor's declared artifact, so a producer has always
    finished (and stopped writing) before any consumer mounts its volume."""
    problems: list[Problem] = []
    for name, node in nodes.items():
        for index, wanted in enumerate(node.inputs):
            loc = (*node.loc, "inputs", index, "from")
            producer = nodes.get(wanted.producer)
            if producer is None:
                problems.append(document.problem(loc, f"unknown node {wanted.producer!r}"))
            elif wanted.producer not in ancestors[name]:
                message = f"{wanted.producer!r} is not a need or an ancestor of {name!r}"
                problems.append(document.problem(loc, message))
            elif wanted.name not in {a.name for a in producer.artifacts}:
                message = f"node {wanted.producer!r} has no artifact {wanted.name!r}"
                problems.append(document.problem(loc, message))
    if problems:
        raise InputRefused(problems)


def _ancestors(nodes: dict[str, PlannedNode]) -> dict[str, frozenset[str]]:
    """Each node's needs and their ancestors (`nodes` in topological order)."""
    ancestors: dict[str, frozenset[str]] = {}
    for name, node in nodes.items():
        sources = [edge.source for edge in node.needs]
        ancestors[name] = frozenset(sources).union(*(ancestors[s] for s in sources))
    return ancestors


def _with_conditions(
    document: Document, nodes: dict[str, PlannedNode], ancestors: dict[str, frozenset[str]]
) -> dict[str, PlannedNode]:
    """Compile every `when` against what the node may see: its needs and their ancestors."""
    problems: list[Problem] = []
    for name, node in nodes.items():
        if node.when is None:
            continue
        try:
            condition = compile_condition(node.when, set(ancestors[name]))
        except ConditionError as error:
            problems.append(document.problem((*node.loc, "when"), str(error)))
            continue
        nodes[name] = dataclasses.replace(node, condition=condition, visible=ancestors[name])
    if problems:
        raise InputRefused(problems)
    return nodes


def _with_prompts(
    document: Document, nodes: dict[str, PlannedNode], ancestors: dict[str, frozenset[str]]
) -> dict[str, PlannedNode]:
    """Compile every prompt's `${{ ... }}` against what the node may see, as `when` is."""
    problems: list[Problem] = []
    for name, node in nodes.items():
        if node.prompt is None:
            continue
        try:
            template = compile_template(node.prompt.source, node.prompt.slot, set(ancestors[name]))
        except PromptError as error:
            problems.append(document.problem((*node.loc, "prompt"), str(error)))
            continue
        nodes[name] = dataclasses.replace(node, prompt=template, visible=ancestors[name])
    if problems:
        raise InputRefused(problems)
    return nodes


def _expand(
    document: Document, workflow: Workflow, problems: list[Problem]
) -> tuple[dict[str, _Entry], dict[str, str]]:
    entries: dict[str, _Entry] = {}
    group_tails: dict[str, str] = {}  # group name -> its last member
    seen: set[str] = set()

    def claim(name: str, loc: Loc) -> bool:
        if not NODE_NAME.fullmatch(name):  # fullmatch: `$` alone would let "a\n" by
            problems.append(
                document.problem(loc, f"invalid name {name!r}: use [a-z0-9][a-z0-9_-]*, at most 63")
            )
            return False
        if name in seen:
            problems.append(document.problem(loc, f"duplicate node name {name!r}"))
            return False
        seen.add(name)
        return True

    for key, item in workflow.nodes.items():
        loc = ("nodes", key)
        if not claim(str(key), loc):
            continue
        if isinstance(item, Group):
            for entry in _expand_group(key, item, loc, document, claim):
                entries[entry.name] = entry
            group_tails[key] = item.sequence[-1].name
        else:
            entries[key] = _Entry(
                key,
                loc,
                item,
                list(item.needs),
                (*loc, "needs"),
                item.when,
                item.continue_on_failure,
                None,
            )
    return entries, group_tails


def _expand_group(
    group_name: str, group: Group, loc: Loc, document: Document, claim: object
) -> Iterator[_Entry]:
    previous: str | None = None
    for index, member in enumerate(group.sequence):
        member_loc = (*loc, "sequence", index)
        if not claim(member.name, (*member_loc, "name")):  # type: ignore[operator]
            continue
        chain: list[str | Need] = [previous] if previous else list(group.needs)
        when = _both(group.when, member.when)
        yield _Entry(
            member.name,
            member_loc,
            member,
            chain + list(member.needs),
            (*member_loc, "needs") if member.needs or previous else (*loc, "needs"),
            when,
            group.continue_on_failure or member.continue_on_failure,
            group_name,
        )
        previous = member.name


def _both(first: str | None, second: str | None) -> str | None:
    if first and second:
        return f"({first}) && ({second})"
    return first or second


def _resolve_needs(
    document: Document,
    entry: _Entry,
    entries: dict[str, _Entry],
    group_tails: dict[str, str],
    problems: list[Problem],
) -> tuple[Edge, ...]:
    edges: dict[str, Edge] = {}
    for index, need in enumerate(entry.needs):
        name, allow = (need.node, need.allow_failure) if isinstance(need, Need) else (need, False)
        source = group_tails.get(name, name)
        loc = (*entry.needs_loc, index)
        if source not in entries:
            problems.append(document.problem(loc, f"unknown node {name!r}"))
        elif source == entry.name or entries[source].group == entry.name:
            problems.append(document.problem(loc, f"node {entry.name!r} cannot need itself"))
        else:
            edges[source] = Edge(
                source, entry.name, allow or edges.get(source, Edge("", "")).allow_failure
            )
    return tuple(edges.values())


def _plan_node(
    document: Document,
    workflow: Workflow,
    entry: _Entry,
    needs: tuple[Edge, ...],
    runtimes: dict[str, Runtime],
    problems: list[Problem],
) -> PlannedNode | None:
    request, defaults = entry.fields, workflow.defaults
    runtime_name = request.runtime or defaults.runtime or DEFAULT_RUNTIME
    runtime = runtimes.get(runtime_name)
    if runtime is None:
        known = ", ".join(sorted(runtimes))
        problems.append(
            document.problem(
                (*entry.loc, "runtime"), f"unknown runtime {runtime_name!r} (known: {known})"
            )
        )
        return None
    if request.prompt is not None and not runtime.agent:
        problems.append(
            document.problem((*entry.loc, "prompt"), f"runtime {runtime_name!r} takes no prompt")
        )
    if request.command is None and request.prompt is None and not runtime.entrypoint:
        problems.append(document.problem(entry.loc, "a node needs a command"))
    if runtime.agent and request.prompt is not None and isinstance(request.command, str):
        message = "with a prompt, command is a list of extra CLI arguments"
        problems.append(document.problem((*entry.loc, "command"), message))
    template = None
    if request.agent is not None:
        _check_agent_block(document, entry.loc, runtime, request, problems)
    if runtime.agent and request.prompt is not None:
        extra = list(request.command or [])
        mapped = agent_flags(runtime.name, request.agent)
        refusals = [*mapped.refusals, *conflicts(runtime.name, request.agent, extra)]
        problems.extend(document.problem((*entry.loc, *r.loc), r.message) for r in refusals)
        argv, template = _agent_argv(document, entry, runtime, problems, mapped.flags)
    else:
        argv = argv_for(runtime, request.command)
    egress, refused = _egress_of(runtime, request, {**defaults.env, **request.env})
    if refused is not None:
        problems.append(document.problem((*entry.loc, "env", str(runtime.base_url_env)), refused))
    # The node's own parser if it names one, else its runtime's default.
    parse = request.outputs.parse if "parse" in request.outputs.model_fields_set else runtime.parse
    if request.budget is not None and parse.format not in ("claude", "codex"):
        message = (
            "a budget counts what an agent's stream reports: this node's output is not "
            "an agent's (claude or codex)"
        )
        problems.append(document.problem((*entry.loc, "budget"), message))
    return PlannedNode(
        name=entry.name,
        loc=entry.loc,
        request=request,
        runtime=runtime,
        argv=tuple(argv),
        needs=needs,
        when=entry.when,
        continue_on_failure=entry.continue_on_failure,
        timeout=request.timeout or defaults.timeout,
        resources=Resources(
            cpus=request.resources.cpus or defaults.resources.cpus,
            memory=request.resources.memory or defaults.resources.memory,
            pids=request.resources.pids or defaults.resources.pids,
        ),
        retries=request.retries or defaults.retries,
        env={**defaults.env, **request.env},
        egress=egress,
        artifacts=tuple(ArtifactOut(a.name, a.path) for a in request.outputs.artifacts),
        inputs=tuple(ArtifactIn(*i.from_.split("/", 1), path=i.path) for i in request.inputs),
        secrets=tuple(request.secrets)
        if "secrets" in request.model_fields_set
        else runtime.secrets,
        parse=parse,
        group=entry.group,
        prompt=template,
        setup_argv=_setup_argv(request.setup.command) if request.setup else (),
        setup_egress=tuple(request.setup.network.egress) if request.setup else (),
    )


def _setup_argv(command: str | list[str]) -> tuple[str, ...]:
    return ("/bin/sh", "-c", command) if isinstance(command, str) else tuple(command)


# Stands for the prompt while the argv is built, to find its place (by identity: an
# equal string from the workflow is another object).
_PROMPT_SLOT = "\x00prompt\x00"


def _agent_argv(
    document: Document,
    entry: _Entry,
    runtime: Runtime,
    problems: list[Problem],
    flags: list[str],
) -> tuple[list[str], PromptTemplate | None]:
    """The agent's argv; a prompt with `${{ ... }}` stays a template (compiled once the
    node's ancestors are known) in its slot, the rest has its `$${{` escapes undone."""
    request = entry.fields
    assert request.prompt is not None
    argv = agent_argv(runtime, _PROMPT_SLOT, list(request.command or []), flags)
    slot = next(i for i, argument in enumerate(argv) if argument is _PROMPT_SLOT)
    try:
        parts = split(request.prompt)
    except PromptError as error:
        problems.append(document.problem((*entry.loc, "prompt"), str(error)))
        parts = [request.prompt]
    text = literal(parts)
    argv[slot] = request.prompt if text is None else text
    return argv, None if text is not None else PromptTemplate(request.prompt, slot)


def _check_agent_block(
    document: Document, loc: Loc, runtime: Runtime, request: NodeFields, problems: list[Problem]
) -> None:
    """`agent:` is the settings of an agent preset that runs its CLI from `prompt`: on any
    other node there is no CLI to give them to, and refusing says so (never dropped)."""
    if not runtime.agent:
        message = f"runtime {runtime.name!r} runs no coding agent: `agent:` is for claude, codex"
        problems.append(document.problem((*loc, "agent"), message))
    elif request.prompt is None:
        message = "`agent:` settings need `prompt` (the preset builds the agent's command line)"
        problems.append(document.problem((*loc, "agent"), message))


def _egress_of(
    runtime: Runtime, request: NodeFields, env: dict[str, str]
) -> tuple[tuple[str, ...], str | None]:
    """What the node asks to reach: what it says, else (agents) its API host, or the host
    of the gateway its base-URL variable names; and why that URL is refused, if it is."""
    if "network" in request.model_fields_set:
        return tuple(request.network.egress), None
    base_url = env.get(runtime.base_url_env or "")
    if not base_url:
        return runtime.egress, None
    try:
        parts = urlsplit(base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as error:  # a port that is no port: urlsplit raises on reading it
        return runtime.egress, f"{base_url!r} is not a URL the CLI can reach ({error})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return runtime.egress, f"{base_url!r} is not an http(s)://HOST[:PORT] URL"
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return (f"{host}:{port}",), None


def _check_custom_runtimes(document: Document, workflow: Workflow, problems: list[Problem]) -> None:
    for name in workflow.runtimes:
        if name in PRESETS:
            problems.append(
                document.problem(
                    ("runtimes", name), f"{name!r} is a preset and cannot be redefined"
                )
            )


def _order(document: Document, nodes: dict[str, PlannedNode]) -> tuple[list[str], list[list[str]]]:
    sorter = graphlib.TopologicalSorter(
        {n: [e.source for e in node.needs] for n, node in nodes.items()}
    )
    try:
        sorter.prepare()
    except graphlib.CycleError as error:
        cycle: list[str] = list(reversed(error.args[1]))
        first = nodes[cycle[0]]
        message = "dependency cycle: " + " -> ".join(cycle)
        raise InputRefused([document.problem((*first.loc, "needs"), message)]) from None
    order: list[str] = []
    levels: list[list[str]] = []
    while sorter.is_active():
        level = sorted(sorter.get_ready())
        levels.append(level)
        order.extend(level)
        sorter.done(*level)
    return order, levels
