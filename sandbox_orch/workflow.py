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
    field_validator,
    model_validator,
)

from .agents.budgets import Budget
from .agents.settings import AgentSettings
from .bounded.patterns import PatternError, compile_pattern
from .containerpaths import normalise
from .egress.grants import Grant
from .units import parse_count, parse_cpus, parse_duration, parse_factor, parse_size

NODE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
ARTIFACT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
MAX_NODES = 1000

Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]
# Numbers are checked before pydantic's lax coercion, which takes True as 1, 2.0 as 2
# and inf as a float: each parser refuses those with one sentence (units.py).
Cpus = Annotated[float, BeforeValidator(parse_cpus)]
Pids = Annotated[int, BeforeValidator(parse_count)]
RetryLimit = Annotated[int, BeforeValidator(lambda value: parse_count(value, 0, 10))]
MemoryFactor = Annotated[float, BeforeValidator(lambda value: parse_factor(value, 1.0, 16.0))]
RetryReason = Literal["failed", "timed_out", "oom", "errored"]


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):  # True == 1 to Python; never a version
        raise ValueError("expected the number 1")
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Resources(Strict):
    cpus: Cpus | None = None
    memory: Size | None = None
    pids: Pids | None = None


class ParseSpec(Strict):
    format: Literal["none", "json", "regex", "claude", "codex"] = "none"
    pattern: str | None = None
    all: bool = False
    schema_: dict[str, Any] | str | None = Field(default=None, alias="schema")

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
    name: str
    path: str

    @field_validator("name")
    @classmethod
    def _relative_name(cls, name: str) -> str:
        # The name becomes a directory on the host: never absolute, never climbing out.
        if not name or name.startswith("/") or ".." in name.split("/") or "\\" in name:
            raise ValueError("an artifact name must be relative and must not contain '..'")
        if not ARTIFACT_NAME.match(name):
            raise ValueError("an artifact name is letters, digits, '.', '_' or '-' (at most 63)")
        return name

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, path: str) -> str:
        return _absolute_container_path(path)


class Outputs(Strict):
    parse: ParseSpec = ParseSpec()
    artifacts: list[Artifact] = []


class Input(Strict):
    from_: str = Field(alias="from", pattern=r"^[a-z0-9][a-z0-9_-]*/[^/].*$")
    path: str

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, path: str) -> str:
        return _absolute_container_path(path)


class Need(Strict):
    node: str
    allow_failure: bool = False


class Retries(Strict):
    limit: RetryLimit
    backoff: Duration = 0.0
    on: list[RetryReason] = ["failed", "timed_out", "oom", "errored"]
    memory_factor: MemoryFactor = 1.0

    @field_validator("backoff", mode="before")
    @classmethod
    def _zero_backoff(cls, value: Any) -> Any:
        return 0.0 if value in (0, "0", "0s") else value


def _egress_grant(entry: str) -> str:
    Grant.of(entry)  # host:port or *.domain:port, checked as the policy's grants are
    return entry


class Network(Strict):
    egress: list[Annotated[str, AfterValidator(_egress_grant)]] = []


class Setup(Strict):
    """A command run first, in the same container, with its own egress (setup phase):
    when it ends the proxy drops these grants for good, then the node's command runs."""

    command: str | list[str]
    network: Network = Network()
    timeout: Duration | None = None

    @field_validator("command")
    @classmethod
    def _some_command(cls, command: str | list[str]) -> str | list[str]:
        if not command or (isinstance(command, list) and not command[0]):
            raise ValueError("setup needs a command")
        return command


class Mount(Strict):
    source: str
    target: str
    mode: Literal["ro", "rw"] = "ro"

    @field_validator("target")
    @classmethod
    def _absolute_target(cls, target: str) -> str:
        return _absolute_container_path(target)


class NodeFields(Strict):
    """What a node may request; shared by plain nodes and members of a sequence."""

    runtime: str | None = None
    command: str | list[str] | None = None
    prompt: str | None = None
    needs: list[str | Need] = []
    when: str | None = None
    outputs: Outputs = Outputs()
    inputs: list[Input] = []
    continue_on_failure: bool = False
    retries: Retries | None = None
    timeout: Duration | None = None
    resources: Resources = Resources()
    env: dict[str, str] = {}
    secrets: list[str] = []
    network: Network = Network()
    mounts: list[Mount] = []
    workdir: str | None = None
    agent: AgentSettings | None = None  # agent runtimes: model, tools, permissions, turns
    budget: Budget | None = None  # what this node may spend (agents)
    start_delay: Duration | None = None  # wait this long once due, before starting
    setup: Setup | None = None  # run first with its own egress (setup phase)

    @field_validator("workdir")
    @classmethod
    def _absolute_workdir(cls, workdir: str | None) -> str | None:
        return None if workdir is None else _absolute_container_path(workdir)


class Node(NodeFields):
    pass


class SequenceMember(NodeFields):
    name: str


class Group(Strict):
    """`sequence:` shorthand for a chain; its needs/when/continue_on_failure apply to members."""

    sequence: list[SequenceMember] = Field(min_length=1)
    needs: list[str | Need] = []
    when: str | None = None
    continue_on_failure: bool = False


def _node_or_group(value: Any) -> str:
    return "group" if isinstance(value, dict) and "sequence" in value else "node"


NodeEntry = Annotated[
    Annotated[Node, Tag("node")] | Annotated[Group, Tag("group")],
    Discriminator(_node_or_group),
]


class Defaults(Strict):
    runtime: str | None = None
    timeout: Duration | None = None
    resources: Resources = Resources()
    retries: Retries | None = None
    env: dict[str, str] = {}


class CustomRuntime(Strict):
    image: str = Field(min_length=1)
    entrypoint: list[str] | None = None
    parse: ParseSpec | None = None


class Workflow(Strict):
    version: Annotated[Literal[1], BeforeValidator(_no_bool)]
    name: str = Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
    fail_fast: bool = True
    timeout: Duration | None = None
    defaults: Defaults = Defaults()
    runtimes: dict[str, CustomRuntime] = {}
    budget: Budget | None = None  # what the whole run may spend (agents)
    nodes: dict[str, NodeEntry] = Field(min_length=1, max_length=MAX_NODES)


def _absolute_container_path(path: str) -> str:
    # Once, here: every later check and the engine see only the normal form.
    return normalise(path)
