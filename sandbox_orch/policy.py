"""The operator's policy (CONTRACT 4): what nodes may be granted. Never chosen by a workflow.

Read with the same strict YAML reader as workflows and validated with a strict cerberus
schema: an unknown key is an error, so a typo cannot silently widen or drop a grant.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cerberus
from pydantic import ValidationError

from . import brokerpolicy
from .agents.budgets import Budget
from .agents.settings import PERMISSION_MODES
from .bounded.limits import DEFAULT_PROMPT_BYTES, MAX_PROMPT_BYTES
from .brokerpolicy import BrokerGrant
from .containerpaths import normalise
from .editorschema.values import documented as _doc  # `meta`: for editors only
from .egress.grants import Grant, private_name_problem
from .errors import InputRefused, Problem
from .runtimes import PRESETS
from .shipped import POLICIES_DIR
from .units import parse_count, parse_cpus, parse_duration, parse_size
from .yamlsafe import Document, load_file

DEFAULT_POLICY = POLICIES_DIR / "default.yaml"
POLICY_ENV = "SANDBOX_ORCH_POLICY"


def _checker(parse: Callable[[Any], Any]) -> Callable[[str, Any, Any], None]:
    """A cerberus check from a units.py parser: its one sentence is the error."""

    def check(field_name: str, value: Any, error: Any) -> None:
        try:
            parse(value)
        except ValueError as problem:
            error(field_name, str(problem))

    check.parses = parse  # type: ignore[attr-defined]  # editorschema: what it accepts
    return check


def _budget(value: Any) -> Budget:
    """A budget ceiling, in the workflow's own syntax; its first error as one sentence."""
    try:
        return Budget.model_validate(value)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise ValueError(f"{where}: {message}" if where else message) from None


def _version(value: Any) -> int:
    if value != 1 or isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("unallowed value; only version 1 exists")
    return 1


def _prompt_size(value: Any) -> int:
    size = parse_size(value)
    if size > MAX_PROMPT_BYTES:  # the prompt is one argument of the agent's command line
        raise ValueError(f"a prompt is at most {MAX_PROMPT_BYTES // 1024}k (one argv element)")
    return size


# No "type" rule for numbers: cerberus counts True as an integer and lets NaN past "min";
# the parsers refuse both, and every other wrong type, in one sentence.
_SIZE = {"check_with": _checker(parse_size)}
_DURATION = {"check_with": _checker(parse_duration)}
_CPUS = {"check_with": _checker(parse_cpus)}
_PIDS = {"check_with": _checker(parse_count)}
_STRINGS = {"type": "list", "schema": {"type": "string", "empty": False}}
# host:port, [IPv6]:port or *.domain:port, checked and normalised as egress matches them.
_HOST_PORT = {"type": "list", "schema": {"type": "string", "check_with": _checker(Grant.of)}}


def _numbers(what: str, timeout: str, *more: tuple[str, dict[str, Any], str]) -> dict[str, Any]:
    """limits and defaults: the same numbers, ceilings or what a node gets."""
    fields = {
        "cpus": _doc(_CPUS, f"CPUs {what} (fractions allowed, 0.01 to 1024)."),
        "memory": _doc(_SIZE, f"Memory {what}: bytes or a size such as 512m, 2g."),
        "pids": _doc(_PIDS, f"Processes and threads {what}."),
        "timeout": _doc(_DURATION, timeout),
    }
    return {**fields, **{name: _doc(rules, text) for name, rules, text in more}}


SCHEMA: dict[str, Any] = {
    "version": _doc(
        {"check_with": _checker(_version), "required": True}, "The file format's version: 1."
    ),
    "name": _doc(
        {"type": "string", "empty": False, "required": True},
        "The policy's name (in results and reviews).",
        "default",
    ),
    "runtimes": _doc(
        _STRINGS,
        "Runtimes nodes may use: presets and custom runtime names.",
        ["shell", "python", "node"],
    ),
    "images": _doc(_STRINGS, "Images custom runtimes may use (patterns).", ["sandbox-orch/*"]),
    "isolation": _doc(
        {
            "type": "dict",
            "schema": {
                "oci_runtime": _doc(
                    {"type": "string", "allowed": ["runc", "runsc"]},
                    "The OCI runtime: runc, or runsc (gVisor); runsc missing refuses the run"
                    " (never falls back).",
                ),
                # Never root: the uid and gid must both be non-zero.
                "user": _doc(
                    {"type": "string", "regex": r"^[1-9][0-9]*:[1-9][0-9]*$"},
                    "UID:GID nodes run as; never root (both non-zero).",
                    "10001:10001",
                ),
                "tmpfs": _doc(
                    {
                        "type": "dict",
                        "keysrules": {"type": "string", "check_with": _checker(normalise)},
                        "valuesrules": _SIZE,
                    },
                    "Writable in-memory directories: container path to size.",
                    {"/tmp": "64m"},
                ),
            },
        },
        "How nodes are isolated: OCI runtime, user, tmpfs.",
    ),
    "network": _doc(
        {
            "type": "dict",
            "schema": {
                "egress": _doc(
                    _HOST_PORT,
                    "HOST:PORT (or *.DOMAIN:PORT, [IPv6]:PORT) nodes may request; [] = none at all."
                    " A granted name that resolves to a private, loopback, link-local or metadata"
                    " address is refused at connect time; an IP literal is taken as meant.",
                    ["api.anthropic.com:443", "*.githubusercontent.com:443"],
                ),
                "private_names": _doc(
                    _HOST_PORT,
                    "Granted names (exactly as in egress) that may resolve to private or loopback"
                    " addresses (never link-local or metadata).",
                    ["git.internal.example:443"],
                ),
            },
        },
        "Egress nodes may request.",
    ),
    "mounts": _doc(
        {
            "type": "list",
            "schema": {
                "type": "dict",
                "schema": {
                    "source": _doc(
                        {"type": "string", "empty": False, "required": True},
                        "A host root nodes may mount, relative to the workflow file.",
                        ".",
                    ),
                    "modes": _doc(
                        {"type": "list", "allowed": ["ro", "rw"], "required": True},
                        "The modes allowed under it: ro, rw.",
                        ["ro"],
                    ),
                },
            },
        },
        "Host roots nodes may mount, relative to the workflow file.",
    ),
    "env": _doc(
        {
            "type": "dict",
            "schema": {
                "deny": _doc(
                    _STRINGS,
                    "Names added to the built-in deny list"
                    " (LD_PRELOAD, BASH_ENV, NODE_OPTIONS, ...).",
                    ["PYTHONPATH"],
                )
            },
        },
        "Environment variables nodes may not set.",
    ),
    "secrets": _doc(
        {
            "type": "dict",
            "keysrules": {"type": "string", "regex": r"^[A-Za-z_][A-Za-z0-9_]*$"},
            "valuesrules": {
                "type": "dict",
                "schema": {
                    "from_env": _doc(
                        {"type": "string", "empty": False, "excludes": "from_file"},
                        "Read from this environment variable of sandbox-orch.",
                        "ANTHROPIC_API_KEY",
                    ),
                    "from_file": _doc(
                        {"type": "string", "empty": False, "excludes": "from_env"},
                        "Read from this file (a regular file).",
                    ),
                    "runtimes": _doc(_STRINGS, "Runtimes whose nodes may have it.", ["claude"]),
                    "egress": _doc(
                        _HOST_PORT,
                        "Where nodes holding it may connect (HOST:PORT).",
                        ["api.anthropic.com:443"],
                    ),
                    "broker": brokerpolicy.schema(_checker),
                },
            },
        },
        "Secrets by name: where each is read from, and which runtimes and hosts get it.",
    ),
    "limits": _doc(
        {
            "type": "dict",
            "schema": _numbers(
                "at most, per node",
                "How long a node may run, at most.",
                ("output", _SIZE, "Output a node may write, at most."),
                ("artifacts", _SIZE, "Size of each artifact, at most."),
                ("artifacts_total", _SIZE, "All artifact volumes a run holds at once, at most."),
                # an agent's whole prompt
                (
                    "prompt",
                    {"check_with": _checker(_prompt_size)},
                    "An agent's prompt as launched (default 64k, at most 120k).",
                ),
            ),
        },
        "Ceilings: asking for more is refused.",
        {"cpus": 2, "memory": "2g", "pids": 512, "timeout": "30m"},
    ),
    "defaults": _doc(
        {
            "type": "dict",
            "schema": _numbers(
                "a node gets when it asks nothing", "A node's timeout when it sets none."
            ),
        },
        "What a node gets when it asks nothing.",
        {"cpus": 1, "memory": "512m", "pids": 256, "timeout": "10m"},
    ),
    # What agent nodes may set in their `agent:` block, and what a run may spend.
    "agents": _doc(
        {
            "type": "dict",
            "schema": {
                "models": _doc(
                    _STRINGS,
                    "Models agent nodes may use (patterns); absent: any.",
                    ["claude-sonnet-*"],
                ),
                "permission_modes": _doc(
                    {"type": "list", "allowed": list(PERMISSION_MODES)},
                    "Permission modes agent nodes may use; absent: any.",
                    ["default", "acceptEdits", "plan"],
                ),
                "never_allow_tools": _doc(
                    _STRINGS,
                    "Tool patterns no node may put in allowed_tools.",
                    ["WebFetch", "WebSearch"],
                ),
                "budget": _doc(
                    {"check_with": _checker(_budget)},
                    "Ceilings no workflow may raise, in the workflow's budget syntax.",
                    {"usd": 10, "tokens": 5000000},
                ),
            },
        },
        "What agent nodes may set in their agent: block, and what a run may spend.",
    ),
}


@dataclass(frozen=True)
class Limits:
    cpus: float
    memory: int
    pids: int
    timeout: float
    output: int = 16 * 1024**2
    artifacts: int = 1024**3
    # All artifact volumes held at once (memory); unset: ARTIFACTS_TOTAL_FACTOR x artifacts.
    artifacts_total: int = 4 * 1024**3
    prompt: int = DEFAULT_PROMPT_BYTES  # an agent's prompt, as launched (UTF-8 bytes)


ARTIFACTS_TOTAL_FACTOR = 4
# What a policy gets where it says nothing: conservative, equal to policies/default.yaml.
BUILTIN_LIMITS = Limits(cpus=2, memory=2 * 1024**3, pids=512, timeout=1800)
BUILTIN_DEFAULTS = Limits(cpus=1, memory=512 * 1024**2, pids=256, timeout=600)


@dataclass(frozen=True)
class SecretGrant:
    name: str
    from_env: str | None
    from_file: str | None
    runtimes: tuple[str, ...]
    egress: tuple[str, ...]
    broker: BrokerGrant | None = None  # None: handed to the node in its environment


@dataclass(frozen=True)
class MountGrant:
    source: Path  # resolved against the workflow's directory at admission
    modes: tuple[str, ...]


@dataclass(frozen=True)
class AgentRules:
    """The policy's `agents:` section. None for models or permission modes: any."""

    models: tuple[str, ...] | None = None
    permission_modes: tuple[str, ...] | None = None
    never_allow_tools: tuple[str, ...] = ()
    budget: Budget | None = None

    @property
    def restricts_settings(self) -> bool:
        """Whether the policy limits what an agent's settings may be: then only the
        `agent:` block may set them (raw CLI arguments could override it)."""
        return (
            self.models is not None
            or self.permission_modes is not None
            or bool(self.never_allow_tools)
        )


@dataclass(frozen=True)
class Policy:
    name: str
    path: str
    sha256: str
    document: Document = field(repr=False)
    runtimes: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    oci_runtime: str = "runc"
    user: str = "10001:10001"
    tmpfs: dict[str, int] = field(default_factory=lambda: {"/tmp": 64 * 1024**2})
    egress: tuple[str, ...] = ()
    private_names: tuple[str, ...] = ()  # granted names opted in to private addresses
    mounts: tuple[MountGrant, ...] = ()
    env_deny: tuple[str, ...] = ()
    secrets: dict[str, SecretGrant] = field(default_factory=dict)
    limits: Limits = BUILTIN_LIMITS
    defaults: Limits = BUILTIN_DEFAULTS
    agents: AgentRules = AgentRules()


def choose_policy_path(option: str | None) -> Path:
    """--policy, else $SANDBOX_ORCH_POLICY, else the shipped default (CONTRACT 1). A bare
    name (`agents`) with no such file here is the shipped policies/<name>.yaml."""
    chosen = option or os.environ.get(POLICY_ENV)
    return shipped_or_path(chosen) if chosen else DEFAULT_POLICY


def shipped_policies() -> list[str]:
    return sorted(p.stem for p in POLICIES_DIR.glob("*.yaml"))


def shipped_or_path(value: str) -> Path:
    """A path with a slash or a .yaml/.yml suffix is always a path; a bare name is a file
    in the working directory if one exists (a directory `ci/` is none), else the
    installation's shipped policy."""
    path = Path(value)
    here = os.path.lexists(path) and not path.is_dir()
    if "/" in value or path.suffix.lower() in (".yaml", ".yml") or here:
        return path
    if value in shipped_policies():
        return POLICIES_DIR / f"{value}.yaml"
    names = ", ".join(shipped_policies())
    message = f"no policy file {value!r} here, nor a shipped policy of that name ({names})"
    raise InputRefused([Problem("policy", None, "", message)])


def shipped_granting(runtime: str) -> str | None:
    """The shipped policy that grants `runtime`, for a refusal to name (read only then)."""
    for name in ("agents", "ci", "default"):
        path = POLICIES_DIR / f"{name}.yaml"
        try:
            if path.is_file() and runtime in load_policy(path).runtimes:
                return name
        except InputRefused:
            continue
    return None


class _Validator(cerberus.Validator):
    """Cerberus, with `regex` matching the whole value: its own appends `$` and uses
    `re.match`, and `$` also matches before a final newline ("10001:10001\\n" passed)."""

    def _validate_regex(self, pattern: str, field: str, value: object) -> None:
        """{'type': 'string'}"""
        if isinstance(value, str) and not re.fullmatch(pattern, value):
            self._error(field, cerberus.errors.REGEX_MISMATCH)


def load_policy(path: Path) -> Policy:
    document = load_file(path)
    validator = _Validator(SCHEMA)  # unknown keys refused: allow_unknown is False
    if not isinstance(document.data, dict) or not validator.validate(document.data):
        errors = validator.errors if isinstance(document.data, dict) else {"": ["not a mapping"]}
        raise InputRefused([document.problem(loc, msg) for loc, msg in _flatten(errors)])
    if problems := _private_name_problems(document) + _broker_problems(document):
        raise InputRefused(problems)
    return _policy(document)


def _private_name_problems(document: Document) -> list[Problem]:
    network = document.data.get("network", {})
    return [
        document.problem(("network", "private_names", index), why)
        for index, entry in enumerate(network.get("private_names", ()))
        if (why := private_name_problem(entry, network.get("egress", ())))
    ]


def _broker_problems(document: Document) -> list[Problem]:
    preset_env = {n: r.base_url_env for n, r in PRESETS.items() if r.base_url_env}
    base_dir = Path(document.path).resolve().parent
    return [
        document.problem(("secrets", name, "broker", *loc), message)
        for name, grant in document.data.get("secrets", {}).items()
        if "broker" in grant
        for loc, message in brokerpolicy.problems(
            grant["broker"], grant.get("runtimes", []), base_dir, preset_env
        )
    ]


def _flatten(errors: Any, loc: tuple = ()) -> list[tuple[tuple, str]]:
    """Cerberus nests errors as {field: [message | {child: [...]}]}; list them flat."""
    out: list[tuple[tuple, str]] = []
    for key, items in errors.items():
        here = (*loc, key) if key != "" else loc
        for item in items:
            if isinstance(item, dict):
                out.extend(_flatten(item, here))
            else:
                out.append((here, "unknown key" if item == "unknown field" else item))
    return out


def _policy(document: Document) -> Policy:
    data = document.data
    isolation = data.get("isolation", {})
    base_dir = Path(document.path).resolve().parent  # a CA bundle is relative to the policy
    return Policy(
        name=data["name"],
        path=document.path,
        sha256=document.sha256,  # of the bytes read once: the file is never read twice
        document=document,
        runtimes=tuple(data.get("runtimes", ())),
        images=tuple(data.get("images", ())),
        oci_runtime=isolation.get("oci_runtime", "runc"),
        user=isolation.get("user", "10001:10001"),
        tmpfs={
            normalise(k): parse_size(v) for k, v in isolation.get("tmpfs", {"/tmp": "64m"}).items()
        },
        egress=tuple(data.get("network", {}).get("egress", ())),
        private_names=tuple(data.get("network", {}).get("private_names", ())),
        mounts=tuple(
            MountGrant(Path(m["source"]), tuple(m["modes"])) for m in data.get("mounts", ())
        ),
        env_deny=tuple(data.get("env", {}).get("deny", ())),
        secrets={
            name: SecretGrant(
                name,
                grant.get("from_env"),
                grant.get("from_file"),
                tuple(grant.get("runtimes", ())),
                tuple(grant.get("egress", ())),
                brokerpolicy.grant(grant["broker"], base_dir) if "broker" in grant else None,
            )
            for name, grant in data.get("secrets", {}).items()
        },
        limits=_limits(data.get("limits", {}), BUILTIN_LIMITS),
        defaults=_limits(data.get("defaults", {}), BUILTIN_DEFAULTS),
        agents=_agent_rules(data.get("agents", {})),
    )


def _agent_rules(data: dict[str, Any]) -> AgentRules:
    def listed(key: str) -> tuple[str, ...] | None:
        return tuple(data[key]) if key in data else None

    return AgentRules(
        models=listed("models"),
        permission_modes=listed("permission_modes"),
        never_allow_tools=tuple(data.get("never_allow_tools", ())),
        budget=_budget(data["budget"]) if "budget" in data else None,
    )


def _limits(data: dict[str, Any], fallback: Limits) -> Limits:
    artifacts = parse_size(data.get("artifacts", fallback.artifacts))
    return Limits(
        cpus=parse_cpus(data.get("cpus", fallback.cpus)),
        memory=parse_size(data.get("memory", fallback.memory)),
        pids=parse_count(data.get("pids", fallback.pids)),
        timeout=parse_duration(data.get("timeout", fallback.timeout)),
        output=parse_size(data.get("output", fallback.output)),
        artifacts=artifacts,
        artifacts_total=(
            parse_size(data["artifacts_total"])
            if "artifacts_total" in data
            else ARTIFACTS_TOTAL_FACTOR * artifacts
        ),
        prompt=_prompt_size(data.get("prompt", fallback.prompt)),
    )
