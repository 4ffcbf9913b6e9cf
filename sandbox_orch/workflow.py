"""The workflow file, version 1 (CONTRACT 3), as strict pydantic models.

Unknown keys are errors everywhere, so `privileged: true` is refused as an unknown key.
These models only say what a workflow *requests*; the policy decides (admission.py).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from .agents.budgets import Budget
from .agents.settings import AgentSettings
from .bounded.patterns import PatternError, compile_pattern
from .containerpaths import normalise
from .editorschema import values
from .egress.grants import Grant
from .units import parse_count, parse_cpus, parse_duration, parse_factor, parse_size

NODE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
ARTIFACT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
MAX_NODES = 1000

# WithJsonSchema: what `sandbox-orch schema workflow` says each parser accepts (the
# parsers' own patterns and bounds, editorschema/values.py); validation ignores it.
Duration = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(values.DURATION)]
Size = Annotated[int, BeforeValidator(parse_size), WithJsonSchema(values.SIZE)]
# Numbers are checked before pydantic's lax coercion, which takes True as 1, 2.0 as 2
# and inf as a float: each parser refuses those with one sentence (units.py).
Cpus = Annotated[float, BeforeValidator(parse_cpus), WithJsonSchema(values.CPUS)]
Pids = Annotated[int, BeforeValidator(parse_count), WithJsonSchema(values.count())]
RetryLimit = Annotated[
    int,
    BeforeValidator(lambda value: parse_count(value, 0, 10)),
    WithJsonSchema(values.count(0, 10)),
]
MemoryFactor = Annotated[
    float,
    BeforeValidator(lambda value: parse_factor(value, 1.0, 16.0)),
    WithJsonSchema(values.factor(1.0, 16.0)),
]


def _backoff(value: Any) -> float:
    # 0 is no wait, which no other duration may be (was a field_validator that ran before
    # this type's own parser, which then refused the 0.0 it returned).
    if not isinstance(value, bool) and value in (0, "0", "0s"):
        return 0.0
    return parse_duration(value)


Backoff = Annotated[
    float,
    BeforeValidator(_backoff),
    WithJsonSchema({"anyOf": [values.DURATION, {"enum": [0, "0", "0s"]}]}),
]
ContainerPath = Annotated[str, WithJsonSchema(values.CONTAINER_PATH)]  # checked by normalise
ArtifactName = Annotated[str, WithJsonSchema({"type": "string", "pattern": ARTIFACT_NAME.pattern})]
NodeName = Annotated[str, WithJsonSchema({"type": "string", "pattern": NODE_NAME.pattern})]
RetryReason = Literal["failed", "timed_out", "oom", "errored"]


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):  # True == 1 to Python; never a version
        raise ValueError("expected the number 1")
    return value


class Strict(BaseModel):
    # The string under a field documents it, and is its description in the schema editors
    # read (`sandbox-orch schema workflow`, editorschema/docstrings.py).
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Resources(Strict):
    """What the node's container may use; never more than the policy's `limits`."""

    cpus: Cpus | None = None
    """CPUs, fractions allowed (0.01 to 1024). Unset: the policy's default."""
    memory: Size | None = None
    """Memory limit: bytes or a size in binary units (`512m`, `1g`). Unset: the policy's default."""
    pids: Pids | None = None
    """How many processes and threads the container may have. Unset: the policy's default."""


class ParseSpec(Strict):
    """How the node's standard output becomes its `outputs` (read by `when` and later nodes)."""

    format: Literal["none", "json", "regex", "claude", "codex"] = "none"
    """`json`: the whole stdout, else its last JSON line; `regex`: `pattern`'s named groups;
    `claude`/`codex`: the agent's stream; `none`: no outputs."""
    pattern: str | None = Field(default=None, examples=[r"(?P<file>[^:]+):(?P<line>\d+)"])
    """format regex only (and required there): an RE2 pattern; named groups become fields."""
    all: bool = False
    """format regex only: every match (a list) instead of the first."""
    schema_: dict[str, Any] | str | None = Field(
        default=None, alias="schema", examples=["schemas/coverage.json"]
    )
    """format json or regex only: a JSON Schema the outputs must satisfy, inline or a file
    relative to the workflow; outputs that fail it fail the node."""

    @model_validator(mode="after")
    def _pattern_fits_format(self) -> ParseSpec:
        if self.format == "regex":
            if not self.pattern:
                raise ValueError("format regex needs a pattern")
            try:
                compile_pattern(self.pattern)  # RE2: linear time, whatever the pattern
            except PatternError as error:
                raise ValueError(f"pattern {error}") from None
        elif self.pattern is not None or self.all:
            raise ValueError("pattern and all are only for format regex")
        if self.schema_ is not None and self.format not in ("json", "regex"):
            raise ValueError("a schema is only for format json or regex")
        return self


class Artifact(Strict):
    """A file or directory the node leaves for later nodes (and the run's results)."""

    name: ArtifactName = Field(examples=["dist", "report.xml"])
    """The artifact's name: letters, digits, `.`, `_`, `-`, at most 63; later nodes take it
    as `NODE/NAME`."""
    path: ContainerPath = Field(examples=["/out/dist"])
    """Where the node writes it: an absolute path inside the container."""

    @field_validator("name")
    @classmethod
    def _relative_name(cls, name: str) -> str:
        # The name becomes a directory on the host: never absolute, never climbing out.
        if not name or name.startswith("/") or ".." in name.split("/") or "\\" in name:
            raise ValueError("an artifact name must be relative and must not contain '..'")
        if not ARTIFACT_NAME.fullmatch(name):  # `$` alone lets a final "\n" by
            raise ValueError("an artifact name is letters, digits, '.', '_' or '-' (at most 63)")
        return name

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, path: str) -> str:
        return _absolute_container_path(path)


class Outputs(Strict):
    """What the node produces: parsed fields and artifacts."""

    parse: ParseSpec = ParseSpec()
    """How stdout becomes the node's `outputs`."""
    artifacts: list[Artifact] = []
    """Files or directories kept from the node's container."""


class Input(Strict):
    """An artifact of an earlier node, mounted read-only."""

    from_: str = Field(
        alias="from", pattern=r"^[a-z0-9][a-z0-9_-]*/[^/].*$", examples=["build/dist"]
    )
    """`NODE/ARTIFACT`: an artifact of a node this one needs (directly or not)."""
    path: ContainerPath = Field(examples=["/in/dist"])
    """Where it appears in this node's container (read-only)."""

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, path: str) -> str:
        return _absolute_container_path(path)


class Need(Strict):
    """A need with a per-edge failure allowance."""

    node: str
    """The node (or group) that must finish first."""
    allow_failure: bool = False
    """Run this node even if that one failed or timed out."""


class Retries(Strict):
    """Run the node again when an attempt ends in one of the `on` states."""

    limit: RetryLimit
    """How many more attempts, 0 to 10."""
    backoff: Backoff = 0.0
    """Wait before the first retry, then twice that, ...; 0: at once."""
    on: list[RetryReason] = ["failed", "timed_out", "oom", "errored"]
    """Which outcomes are retried (default: all of them)."""
    memory_factor: MemoryFactor = 1.0
    """After an OOM kill, multiply the memory limit by this (1 to 16), never beyond the
    policy's ceiling."""


def _egress_grant(entry: str) -> str:
    Grant.of(entry)  # host:port or *.domain:port, checked as the policy's grants are
    return entry


EgressGrant = Annotated[str, AfterValidator(_egress_grant), WithJsonSchema(values.GRANT)]


class Network(Strict):
    """What the node may reach; the policy must grant each entry."""

    egress: list[EgressGrant] = []
    """`HOST:PORT`, `*.DOMAIN:PORT` or `[IPv6]:PORT`, reached through the run's egress
    proxy; empty: no network at all."""


class Setup(Strict):
    """A command run first, in the same container, with its own egress (setup phase):
    when it ends the proxy drops these grants for good, then the node's command runs."""

    command: str | list[str] = Field(examples=["pip install -r requirements.txt"])
    """A list is executed directly (no shell); a string runs with /bin/sh -c."""
    network: Network = Network()
    """Egress for the setup phase only (e.g. a package index)."""
    timeout: Duration | None = None
    """How long the setup phase may take."""

    @field_validator("command")
    @classmethod
    def _some_command(cls, command: str | list[str]) -> str | list[str]:
        if not command or (isinstance(command, list) and not command[0]):
            raise ValueError("setup needs a command")
        return command


class Mount(Strict):
    """A host directory in the container; the policy must grant its source and mode."""

    source: str = Field(examples=[".", "src"])
    """A host path, relative to the workflow file's directory."""
    target: ContainerPath = Field(examples=["/workspace"])
    """Where it appears in the container (absolute)."""
    mode: Literal["ro", "rw"] = "ro"
    """`ro` (read-only, the default) or `rw`."""

    @field_validator("target")
    @classmethod
    def _absolute_target(cls, target: str) -> str:
        return _absolute_container_path(target)


class NodeFields(Strict):
    """What a node may request; shared by plain nodes and members of a sequence."""

    runtime: str | None = Field(default=None, examples=["shell", "python", "node", "claude"])
    """A preset (`shell`, `python`, `node`, `claude`, `codex`) or a custom runtime from
    `runtimes:`. Unset: `defaults.runtime`, else shell."""
    command: str | list[str] | None = Field(
        default=None, examples=[["python", "-m", "pytest"], "make test || exit 3"]
    )
    """A list is executed directly (no shell); a string runs with /bin/sh -c. With a
    custom runtime's entrypoint or an agent runtime, a list is its extra arguments."""
    prompt: str | None = Field(default=None, examples=["Review the diff in /workspace"])
    """Agent runtimes (`claude`, `codex`): what the agent is asked to do."""
    needs: list[str | Need] = Field(
        default=[], examples=[["build", {"node": "test", "allow_failure": True}]]
    )
    """Nodes that must finish first: names, or `{node, allow_failure}`."""
    when: str | None = Field(
        default=None,
        examples=["nodes.build.outputs.coverage > 80", "always()", "failure()"],
    )
    """A CEL condition over `nodes.NAME.status`, `.exit_code`, `.outputs`, ...; without
    success(), failure(), always() or cancelled() it means `success() && (when)`."""
    outputs: Outputs = Outputs()
    """How stdout is parsed, and the artifacts kept."""
    inputs: list[Input] = []
    """Artifacts of earlier nodes, mounted read-only."""
    continue_on_failure: bool = False
    """A failure of this node does not fail the run, nor stop it under fail_fast."""
    retries: Retries | None = None
    """Run again after a failure, timeout or OOM kill."""
    timeout: Duration | None = None
    """How long one attempt may run. Unset: `defaults.timeout`, else the policy's default."""
    resources: Resources = Resources()
    """CPU, memory and process limits, within the policy's ceilings."""
    env: dict[str, str] = Field(default={}, examples=[{"PYTHONUNBUFFERED": "1"}])
    """Environment variables (strings); names on the deny list (LD_PRELOAD, ...) are refused."""
    secrets: list[str] = Field(default=[], examples=[["ANTHROPIC_API_KEY"]])
    """Secrets the policy grants this node's runtime, by name."""
    network: Network = Network()
    """Egress the node asks for; none by default."""
    mounts: list[Mount] = []
    """Host directories the policy lets nodes mount."""
    workdir: ContainerPath | None = None
    """The working directory inside the container (absolute)."""
    agent: AgentSettings | None = None
    """Agent runtimes: model, tools, permission mode, turns (within the policy's `agents`)."""
    budget: Budget | None = None
    """What this agent node may spend (tokens, USD, turns, tool calls)."""
    start_delay: Duration | None = None
    """Wait this long once the node is due, before starting it."""
    setup: Setup | None = None
    """A command run first with its own egress, dropped before the node's command runs."""

    @field_validator("workdir")
    @classmethod
    def _absolute_workdir(cls, workdir: str | None) -> str | None:
        return None if workdir is None else _absolute_container_path(workdir)


class Node(NodeFields):
    """One node: a command (or an agent's prompt) in its own fresh container."""


class SequenceMember(NodeFields):
    """A member of a `sequence` group: a node that needs the member before it."""

    name: NodeName = Field(examples=["lint"])
    """The member's node name: [a-z0-9][a-z0-9_-]*, at most 63, unique in the workflow."""


class Group(Strict):
    """`sequence:` shorthand for a chain; its needs/when/continue_on_failure apply to members."""

    sequence: list[SequenceMember] = Field(min_length=1)
    """The chain's members, in order; other nodes that need the group need its last member."""
    needs: list[str | Need] = []
    """What the group's first member needs."""
    when: str | None = None
    """A CEL condition applied to every member."""
    continue_on_failure: bool = False
    """Applies to every member."""


def _node_or_group(value: Any) -> str:
    return "group" if isinstance(value, dict) and "sequence" in value else "node"


NodeEntry = Annotated[
    Annotated[Node, Tag("node")] | Annotated[Group, Tag("group")],
    Discriminator(_node_or_group),
]


class Defaults(Strict):
    """Merged into every node that does not set the field itself."""

    runtime: str | None = Field(default=None, examples=["shell"])
    """The runtime of nodes that name none."""
    timeout: Duration | None = None
    """The timeout of nodes that set none."""
    resources: Resources = Resources()
    """Resources of nodes that set none (field by field)."""
    retries: Retries | None = None
    """Retries of nodes that set none."""
    env: dict[str, str] = {}
    """Environment variables every node gets (a node's own win)."""


class CustomRuntime(Strict):
    """A runtime of this workflow: an image the policy grants, with an entrypoint."""

    image: str = Field(min_length=1, examples=["sandbox-orch/python"])
    """The image; the policy's `images` must grant it."""
    entrypoint: list[str] | None = Field(default=None, examples=[["python", "-m", "pyflakes"]])
    """The program a node's list `command` is given to as arguments."""
    parse: ParseSpec | None = None
    """How its nodes' stdout is parsed, unless a node says otherwise."""


class Workflow(Strict):
    """A sandbox-orch workflow, version 1: a DAG of nodes, each in its own hardened
    container, admitted against the operator's policy before anything starts."""

    version: Annotated[Literal[1], BeforeValidator(_no_bool)]
    """The file format's version: 1."""
    name: str = Field(
        min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$", examples=["build-and-test"]
    )
    """The workflow's name (in results and the run history)."""
    fail_fast: bool = True
    """After a failure, start nothing new (default true; `run --keep-going` overrides)."""
    timeout: Duration | None = None
    """How long the whole run may take."""
    defaults: Defaults = Defaults()
    """Merged into every node."""
    runtimes: dict[str, CustomRuntime] = {}
    """Custom runtimes, by name (their images must be granted by the policy)."""
    budget: Budget | None = None
    """What the whole run may spend (agents): tokens, USD, turns, tool calls."""
    nodes: dict[NodeName, NodeEntry] = Field(min_length=1, max_length=MAX_NODES)
    """The nodes, by name ([a-z0-9][a-z0-9_-]*, at most 63; at most 1000 nodes): each a
    node, or a `sequence` group."""


def _absolute_container_path(path: str) -> str:
    # Once, here: every later check and the engine see only the normal form.
    return normalise(path)
