"""`sandbox-orch policy review`: a security review of a policy file (CONTRACT 2, 4).

Functional core: a `Policy` in, findings out; with a workflow's admitted sandboxes, each
node's effective privileges; with an older policy, what the change widens or narrows. Pure:
nothing here reads a file or talks to an engine. The command line loads and prints.

Rule ids are stable: a rule is never renumbered and an id is never reused (retire it).
Severities: critical > high > medium > low > info.

| id    | severity | what it flags |
|-------|----------|---------------|
| SO101 | critical | egress to any host (`*`, `*:443`, `*.*`) |
| SO102 | high     | egress wildcard anyone can register under (`*.com`, `api.*`, `*example.com`) |
| SO103 | medium   | egress wildcard over one domain's subdomains (`*.example.com`) |
| SO104 | medium   | egress port that is not a real port (0, above 65535) |
| SO105 | medium   | egress to a shell, mail, DNS, database or control-plane port (22, 2375...) |
| SO106 | medium   | egress to a public IP literal |
| SO107 | high     | egress to a private, loopback, link-local or otherwise non-public IP literal |
| SO108 | critical | egress to a cloud metadata address (169.254.169.254, ...) |
| SO109 | medium   | agent runtimes granted egress beyond their model APIs |
| SO110 | medium   | egress to an internal host name (localhost, *.internal, metadata names...) |
| SO201 | low      | secret with no egress list (implicit: nodes holding it get no egress) |
| SO202 | critical | secret that may be sent to any host (wildcard egress) |
| SO203 | medium   | secret whose egress is more than its one API host |
| SO204 | high     | secret granted to a general-purpose runtime (shell, python, node) |
| SO205 | high     | secret granted to a runtime name no preset has (a workflow defines it) |
| SO206 | low      | secret granted to a runtime the policy does not allow (dead grant) |
| SO207 | low      | secret that names no runtime (dead grant) |
| SO208 | low      | secret with no source (neither from_env nor from_file) |
| SO301 | high     | agent runtime (claude, codex) under runc instead of gVisor (runsc) |
| SO302 | low      | nodes run under runc: they share the host's kernel |
| SO303 | low      | container uid or gid below 10000 (likely a host account) |
| SO304 | medium   | tmpfs over a system directory (/etc, /usr, /bin, /proc, ...) |
| SO401 | high     | writable mount of the workflow directory (or its .git) |
| SO402 | medium   | writable mount of a subdirectory |
| SO403 | critical | writable mount outside the workflow directory |
| SO404 | high     | mount reaching above the workflow directory (`..`) |
| SO405 | critical | mount of the host root, a home directory, a system directory or a socket |
| SO406 | medium   | mount of another absolute host path |
| SO407 | high     | mount of a credential store (.ssh, .aws, .kube, .docker, .env, ...) |
| SO408 | info     | read-only mount of the workflow directory: nodes see all of it |
| SO409 | low      | mount grant with no modes (dead grant) |
| SO501 | high     | image pattern matching any image (`*`, `ubuntu*`) |
| SO502 | high     | image wildcard over a whole registry (`docker.io/*`, `ghcr.io/*`) |
| SO503 | medium   | image wildcard over a namespace (`myorg/*`) |
| SO504 | low      | image wildcard over the local `sandbox-orch/` namespace |
| SO505 | medium   | registry image not pinned by digest (`@sha256:`) |
| SO506 | info     | local sandbox-orch image not pinned by digest |
| SO601 | info     | `limits` missing or partial: the built-in ceilings apply |
| SO602 | info     | `defaults` missing or partial: the built-in defaults apply |
| SO603 | info     | `isolation` missing or partial: the built-in values apply |
| SO610 | medium   | very high limit, default or tmpfs (memory > 8g, cpus > 8, pids > 4096...) |
| SO611 | medium   | a default above its ceiling (nodes that ask nothing are refused) |
| SO701 | low      | `runtimes` names a runtime that is not a preset (a typo, or a future preset) |
"""

from __future__ import annotations

import fnmatch
import ipaddress
import posixpath
import re
import socket
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from . import __version__
from .policy import BUILTIN_DEFAULTS, BUILTIN_LIMITS, Limits, Policy
from .runtimes import PRESETS
from .units import format_size
from .yamlsafe import Loc, dotted

if TYPE_CHECKING:
    from rich.console import RenderableType

    from .planning import Plan
    from .sandbox import Sandbox

SEVERITIES = ("critical", "high", "medium", "low", "info")
_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}

GENERAL_RUNTIMES = frozenset({"shell", "python", "node"})
AGENT_RUNTIMES = frozenset({"claude", "codex"})
KNOWN_RUNTIMES = frozenset(PRESETS) | GENERAL_RUNTIMES | AGENT_RUNTIMES
MODEL_API_HOSTS = frozenset({"api.anthropic.com", "api.openai.com"})
LOCAL_IMAGE_NAMESPACE = "sandbox-orch/"

INFORMATION_URI = "urn:sandbox-orch:policy-review"  # no public home page yet
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str
    name: str
    summary: str
    why: str
    fix: str


def _rules(*rules: Rule) -> dict[str, Rule]:
    return {rule.id: rule for rule in rules}


RULES: dict[str, Rule] = _rules(
    # ---- network egress
    Rule(
        "SO101", "critical", "egress-any-host", "Egress to any host",
        "Meant as: a node may connect to any host on the internet, send away everything "
        "it can read (the mounted workspace, outputs, secrets) and fetch any tool it wants."
" Today sandbox-orch matches egress grants exactly (host:port, no patterns), so "
        "the wildcard grants nothing yet; it states an intent no reviewer should "
        "approve, and becomes exactly that if grants ever match patterns as `images` do.",
        "List each host:port that nodes need, e.g. \"api.example.com:443\".",
    ),
    Rule(
        "SO102", "high", "egress-broad-wildcard", "Egress wildcard wider than one organisation",
        "The pattern covers hosts that anyone can register or publish under (a whole "
        "top-level domain, a shared hosting suffix, or a name prefix): an attacker's "
        "server among them."
" Today sandbox-orch matches egress grants exactly (host:port, no patterns), so "
        "the wildcard grants nothing yet; it states an intent no reviewer should "
        "approve, and becomes exactly that if grants ever match patterns as `images` do.",
        "Name the exact host, or at least one domain you control: \"*.example.com:443\".",
    ),
    Rule(
        "SO103", "medium", "egress-subdomain-wildcard", "Egress wildcard over a domain",
        "The pattern covers every present and future subdomain, including ones that host "
        "user content or are taken over after a DNS record goes stale."
" Today sandbox-orch matches egress grants exactly (host:port, no patterns), so "
        "the wildcard grants nothing yet; it states an intent no reviewer should "
        "approve, and becomes exactly that if grants ever match patterns as `images` do.",
        "List the exact hosts nodes need instead of the wildcard.",
    ),
    Rule(
        "SO104", "medium", "egress-invalid-port", "Egress port that is not a real port",
        "Port 0 and ports above 65535 do not exist: such a grant is either dead or read "
        "as 'any port' or a wrapped-around port by whatever enforces it.",
        "Use the real port, e.g. 443.",
    ),
    Rule(
        "SO105", "medium", "egress-sensitive-port", "Egress to a sensitive service port",
        "Remote shells, mail, DNS, databases and control planes (Docker, Kubernetes, etcd) "
        "are how a sandboxed node would log in elsewhere, tunnel data out or take over "
        "infrastructure; a build rarely needs them.",
        "Remove the grant, or put the service behind an HTTPS API on port 443.",
    ),
    Rule(
        "SO106", "medium", "egress-ip-literal", "Egress to an IP literal",
        "An IP grant is taken as meant: it bypasses the name-based checks, says nothing "
        "about who owns the address, and keeps working after the address changes hands.",
        "Grant the host name that serves the API instead of its address.",
    ),
    Rule(
        "SO107", "high", "egress-private-address", "Egress to a private or local address",
        "Private, loopback, link-local and other non-public addresses are the operator's "
        "own network and host services; a grant written as an IP literal is taken as "
        "meant, so nodes can reach internal services that trust the local network.",
        "Remove the grant; expose what nodes need as a public, authenticated API.",
    ),
    Rule(
        "SO108", "critical", "egress-metadata", "Egress to a cloud metadata address",
        "The metadata service hands out the host's cloud credentials to whoever asks: "
        "a node that reaches it can act as the machine it runs on.",
        "Remove the grant. Nodes never need the metadata service.",
    ),
    Rule(
        "SO109", "medium", "agent-extra-egress", "Agent runtimes with egress beyond model APIs",
        "Coding agents follow instructions found in the code they read (prompt "
        "injection): any host they can reach besides their model API is a place to send "
        "the workspace or their key.",
        "Keep the egress of a policy that grants agents to their model API hosts; give "
        "other hosts to a separate policy without agents.",
    ),
    Rule(
        "SO110", "medium", "egress-internal-name", "Egress to an internal host name",
        "The name points at the host, the container engine, a cluster or a metadata "
        "service. Names that resolve to private addresses are refused at connect time, "
        "so this grant is either dead or relies on that one check alone.",
        "Remove the grant.",
    ),
    # ---- secrets
    Rule(
        "SO201", "low", "secret-egress-implicit", "Secret without an egress list",
        "The grant does not say where the secret may go. Admission gives a node a secret "
        "only if the node's egress lies within the secret's egress list, so without one, "
        "nodes holding it get no egress at all: safe, but implicit, and easily misread as "
        "'unrestricted' by the next person to edit the file.",
        "Name the one API host the secret is for (`egress: [\"API_HOST:443\"]`), or write "
        "`egress: []` if nodes holding it need no network.",
    ),
    Rule(
        "SO202", "critical", "secret-egress-any", "Secret that may be sent to any host",
        "Meant as: a node holding the secret may send it to a server of its choice."
" Today sandbox-orch matches egress grants exactly (host:port, no patterns), so "
        "the wildcard grants nothing yet; it states an intent no reviewer should "
        "approve, and becomes exactly that if grants ever match patterns as `images` do.",
        "Name the one API host that accepts the secret, e.g. \"api.anthropic.com:443\".",
    ),
    Rule(
        "SO203", "medium", "secret-egress-broad", "Secret egress broader than its API host",
        "A secret is meant for one API; every other host it may travel to is a place it "
        "can leak to.",
        "Keep one host:port in the secret's egress; use one secret per API.",
    ),
    Rule(
        "SO204", "high", "secret-general-runtime", "Secret granted to a general-purpose runtime",
        "shell, python and node run whatever command the workflow gives, and the workflow "
        "may be untrusted: the secret is then readable by arbitrary code.",
        "Grant the secret only to the runtime that needs it (e.g. an agent preset).",
    ),
    Rule(
        "SO205", "high", "secret-custom-runtime", "Secret granted to a workflow-defined runtime",
        "No preset has this name, so it can only be a custom runtime, which the workflow "
        "defines (image, entrypoint): the name does not tell which code gets the secret.",
        "Grant secrets to preset runtimes only.",
    ),
    Rule(
        "SO206", "low", "secret-runtime-not-granted",
        "Secret granted to a runtime the policy forbids",
        "The runtime is not in `runtimes`, so the grant is dead today and comes alive, "
        "perhaps unnoticed, when someone adds the runtime.",
        "Remove the runtime from the secret, or grant the runtime deliberately.",
    ),
    Rule(
        "SO207", "low", "secret-no-runtime", "Secret that names no runtime",
        "A secret goes only to nodes of the runtimes its grant names: with none, no node "
        "can get it. The grant is dead and misleads the reader.",
        "Add `runtimes: [RUNTIME]` naming the one runtime that needs it.",
    ),
    Rule(
        "SO208", "low", "secret-no-source", "Secret with no source",
        "The grant says neither `from_env` nor `from_file`, so it has no value to give.",
        "Add `from_env: NAME` (or `from_file: PATH`), or remove the grant.",
    ),
    # ---- isolation
    Rule(
        "SO301", "high", "agent-without-gvisor", "Agent runtime under runc",
        "Coding agents run code they wrote or were told to run by the content they read. "
        "Under runc they share the host's kernel: one kernel bug is a host escape. gVisor "
        "(runsc) puts a user-space kernel in between.",
        "Set `isolation: {oci_runtime: runsc}` (sandbox-orch refuses, never falls back, "
        "when runsc is missing), or move the agents to a policy that does.",
    ),
    Rule(
        "SO302", "low", "runc-shared-kernel", "Nodes run under runc",
        "Under runc, containers share the host's kernel: the hardening (no capabilities, "
        "seccomp, read-only root, non-root user) stands, but a kernel exploit escapes it.",
        "Use `oci_runtime: runsc` (gVisor) for untrusted workflows, e.g. on shared CI.",
    ),
    Rule(
        "SO303", "low", "low-uid", "Container user is a likely host account",
        "Without user namespaces the container's uid is the host's: uids below 10000 are "
        "usually system or human accounts, whose files a node could touch through a mount "
        "or after an escape.",
        "Use a dedicated, unused uid and gid, e.g. \"10001:10001\".",
    ),
    Rule(
        "SO304", "medium", "tmpfs-system-path", "tmpfs over a system directory",
        "A writable tmpfs over a system directory undoes the read-only root file system "
        "there: a node can replace binaries, libraries or configuration that later "
        "processes trust.",
        "Mount tmpfs only on scratch paths such as /tmp.",
    ),
    # ---- mounts
    Rule(
        "SO401", "high", "mount-writable-workdir", "Writable mount of the workflow directory",
        "A node can rewrite the checkout: git hooks (.git/hooks), CI configuration, "
        "Makefiles and scripts that a person or CI then runs on the host, outside any "
        "sandbox.",
        "Grant `modes: [ro]`; get changes back as artifacts or a patch (`single` does this).",
    ),
    Rule(
        "SO402", "medium", "mount-writable", "Writable mount",
        "Whatever a node writes there stays on the host after the sandbox is gone and is "
        "read by whatever uses the directory next.",
        "Grant `modes: [ro]`; return results as artifacts instead.",
    ),
    Rule(
        "SO403", "critical", "mount-writable-outside",
        "Writable mount outside the workflow directory",
        "A node can change host files beyond the project: other checkouts, dotfiles, "
        "shell start-up files, configuration; a write there persists and runs later "
        "with the host user's rights.",
        "Remove the grant, or grant only a subdirectory of the workflow directory, read-only.",
    ),
    Rule(
        "SO404", "high", "mount-above-workdir", "Mount above the workflow directory",
        "The source climbs out of the workflow's directory (`..`): nodes see sibling "
        "projects and whatever else lies there (credentials, other repositories).",
        "Grant `.` or a subdirectory of it.",
    ),
    Rule(
        "SO405", "critical", "mount-host-sensitive",
        "Mount of the host root, a home or system directory",
        "A mount grant covers its source and everything below it. sandbox-orch refuses "
        "system directories, sockets, home credential stores and home directories "
        "themselves whatever the policy says, but everything else below is granted: "
        "other people's and other projects' files, tool configuration and tokens it does "
        "not know about. A grant of a system path or socket is dead and misleading.",
        "Remove the grant; grant `.` (the workflow's directory) read-only instead.",
    ),
    Rule(
        "SO406", "medium", "mount-absolute", "Mount of an absolute host path",
        "An absolute path is the same for every workflow wherever it lives: any workflow "
        "the operator runs with this policy may read (or write) it.",
        "Grant a path relative to the workflow, or copy what nodes need into the checkout.",
    ),
    Rule(
        "SO407", "high", "mount-credentials", "Mount of a credential store",
        "SSH keys, cloud, cluster, registry and package-index credentials and .env files "
        "let whoever reads them act as their owner elsewhere.",
        "Remove the grant; give a node the one token it needs as a secret restricted to "
        "its API host.",
    ),
    Rule(
        "SO408", "info", "mount-workdir-readonly", "Read-only mount of the workflow directory",
        "Nodes see everything in the workflow's directory, including .git (and any token "
        "in its remote URLs) and untracked files such as .env. Usually what you want.",
        "Keep credentials out of the directory, or grant a subdirectory instead.",
    ),
    Rule(
        "SO409", "low", "mount-no-modes", "Mount grant with no modes",
        "`modes: []` allows no access: the grant is dead and misleads the reader.",
        "Grant `modes: [ro]`, or remove the entry.",
    ),
    # ---- images
    Rule(
        "SO501", "high", "image-any", "Image pattern matching any image",
        "Custom runtimes may then use any image from any registry: the workflow picks "
        "the software (and the setuid binaries, and the supply chain) its nodes run.",
        "List the images custom runtimes need, pinned by digest.",
    ),
    Rule(
        "SO502", "high", "image-registry-wildcard", "Image wildcard over a whole registry",
        "Anyone who can publish to that registry (for public registries: anyone) "
        "decides what runs in your sandboxes.",
        "List the images custom runtimes need, pinned by digest.",
    ),
    Rule(
        "SO503", "medium", "image-namespace-wildcard", "Image wildcard over a namespace",
        "Every image anyone can push to this namespace, now or later, under any tag, is "
        "granted.",
        "List the images, pinned by digest (`name@sha256:...`).",
    ),
    Rule(
        "SO504", "low", "image-local-wildcard",
        "Image wildcard over the local sandbox-orch namespace",
        "sandbox-orch builds these images itself and never pulls them; still, anyone who "
        "can tag images on this engine can add one that matches.",
        "List the sandbox-orch images that custom runtimes need.",
    ),
    Rule(
        "SO505", "medium", "image-unpinned", "Image not pinned by digest",
        "A tag can be moved: whoever controls the repository (or the registry, or the "
        "path to it) decides what the tag means on the day a node starts.",
        "Pin the image: `name@sha256:DIGEST`.",
    ),
    Rule(
        "SO506", "info", "image-local-unpinned", "Local image not pinned by digest",
        "sandbox-orch builds its own images on this engine (`sandbox-orch images build`) "
        "and never pulls them, so the tag means what was last built here.",
        "Nothing to do unless you need to know exactly which build ran.",
    ),
    # ---- limits
    Rule(
        "SO601", "info", "limits-builtin", "Built-in ceilings apply",
        "Where `limits` says nothing, the built-in ceilings apply. They are conservative, "
        "but a reader of this file cannot see them.",
        "Write the ceilings out in `limits`.",
    ),
    Rule(
        "SO602", "info", "defaults-builtin", "Built-in defaults apply",
        "Where `defaults` says nothing, the built-in defaults apply to nodes that ask "
        "for nothing.",
        "Write the defaults out in `defaults`.",
    ),
    Rule(
        "SO603", "info", "isolation-builtin", "Built-in isolation settings apply",
        "Where `isolation` says nothing, the built-in values apply.",
        "Write the isolation settings out in `isolation`.",
    ),
    Rule(
        "SO610", "medium", "limit-very-high", "Very high limit",
        "A node given this much can exhaust the host for every other run (memory, CPU, "
        "process table, disk), or keep a compromise running for a long time.",
        "Lower it to what the workloads need; give heavy jobs their own policy.",
    ),
    Rule(
        "SO611", "medium", "default-above-ceiling", "Default above its ceiling",
        "A node that asks for nothing gets the default, which the ceiling then refuses: "
        "such nodes never run, and the usual 'fix' is to raise the ceiling.",
        "Make each default at most its ceiling.",
    ),
    # ---- runtimes
    Rule(
        "SO701", "low", "runtime-unknown", "Unknown runtime granted",
        "No preset has this name: the grant does nothing today (custom runtimes are "
        "granted by `images`), and would silently grant a preset of that name added later.",
        "Remove it, or correct the spelling (shell, python, node, claude, codex).",
    ),
)  # fmt: skip


@dataclass(frozen=True)
class Finding:
    id: str
    severity: str
    file: str
    line: int | None
    field: str
    title: str
    why: str
    fix: str

    def sort_key(self) -> tuple[int, int, str, str]:
        return (_RANK[self.severity], self.line or 0, self.id, self.field)


@dataclass(frozen=True)
class Change:
    direction: str  # widens | narrows | changes
    area: str
    summary: str
    file: str
    line: int | None
    field: str


@dataclass(frozen=True)
class Report:
    policy: Policy
    findings: list[Finding]
    privileges: dict[str, dict[str, Any]] | None = None
    workflow: str | None = None
    against: Policy | None = None
    changes: list[Change] | None = None
    fail_on: str | None = None

    def counts(self) -> dict[str, int]:
        counted = Counter(f.severity for f in self.findings)
        return {severity: counted.get(severity, 0) for severity in SEVERITIES}

    @property
    def failed(self) -> bool:
        return failing(self.findings, self.fail_on)


def failing(findings: Iterable[Finding], fail_on: str | None) -> bool:
    """Whether any finding is at or above `fail_on` (never, without it)."""
    if fail_on is None:
        return False
    return any(_RANK[f.severity] <= _RANK[fail_on] for f in findings)


# --------------------------------------------------------------------------- the review


class _Review:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.document = policy.document
        self.data: dict[str, Any] = policy.document.data
        self.findings: list[Finding] = []

    def add(
        self, rule_id: str, loc: Loc, title: str, why: str | None = None, fix: str | None = None
    ) -> None:
        rule = RULES[rule_id]
        self.findings.append(
            Finding(
                id=rule.id,
                severity=rule.severity,
                file=self.document.path,
                line=self.document.line_of(loc),
                field=dotted(loc),
                title=title,
                why=why or rule.why,
                fix=fix or rule.fix,
            )
        )

    def has(self, loc: Loc) -> bool:
        return loc in self.document.lines


def review(policy: Policy) -> list[Finding]:
    """Every finding of the policy, most severe first, then by line."""
    r = _Review(policy)
    _check_runtimes(r)
    _check_isolation(r)
    _check_network(r)
    _check_secrets(r)
    _check_mounts(r)
    _check_images(r)
    _check_limits(r)
    return sorted(r.findings, key=Finding.sort_key)


def _check_runtimes(r: _Review) -> None:
    for index, name in enumerate(r.data.get("runtimes") or ()):
        if name not in KNOWN_RUNTIMES:
            r.add("SO701", ("runtimes", index), f"runtime {name!r} is not a preset")


def _check_isolation(r: _Review) -> None:
    policy = r.policy
    agents = [(i, n) for i, n in enumerate(r.data.get("runtimes") or ()) if n in AGENT_RUNTIMES]
    written = r.has(("isolation", "oci_runtime"))
    runtime_loc: Loc = ("isolation", "oci_runtime") if written else ("isolation",)
    if agents and policy.oci_runtime != "runsc":
        names = ", ".join(n for _, n in agents)
        loc = runtime_loc if written else ("runtimes", agents[0][0])
        r.add("SO301", loc, f"agent runtimes ({names}) run under {policy.oci_runtime}, not gVisor")
    elif policy.oci_runtime == "runc" and (policy.runtimes or policy.images):
        r.add("SO302", runtime_loc, "nodes run under runc (shared host kernel)")
    user = r.data.get("isolation", {}).get("user")
    if user is not None:
        uid, gid = (int(part) for part in user.split(":"))
        if min(uid, gid) < 10000:
            r.add("SO303", ("isolation", "user"), f"container user {user} is below 10000")
    for path, size in policy.tmpfs.items():
        loc = ("isolation", "tmpfs", path)
        top = posixpath.normpath(path).lstrip("/").split("/")[0]
        if top in _SYSTEM_TMPFS:
            r.add("SO304", loc, f"tmpfs over the system directory {path}")
        if size > _HIGH["tmpfs"]:
            r.add(
                "SO610",
                loc,
                f"tmpfs {path} of {format_size(size)} (above {format_size(_HIGH['tmpfs'])})",
                why="tmpfs lives in the host's memory: a node can fill it to exhaust the "
                "host for every other run.",
                fix="Keep tmpfs small (64m is plenty for /tmp); write bulk data to artifacts.",
            )
    missing = [k for k in ("oci_runtime", "user", "tmpfs") if not r.has(("isolation", k))]
    if missing:
        builtin = _builtin_isolation()
        shown = ", ".join(f"{k} {builtin[k]}" for k in missing)
        state = "partial" if r.has(("isolation",)) else "not set"
        r.add("SO603", ("isolation",), f"isolation {state}: the built-in values apply: {shown}")


def _builtin_isolation() -> dict[str, str]:
    """What a policy gets where `isolation` says nothing (the Policy dataclass defaults)."""
    defaults = {f.name: f for f in fields(Policy)}
    tmpfs = defaults["tmpfs"].default_factory()  # type: ignore[misc]
    return {
        "oci_runtime": str(defaults["oci_runtime"].default),
        "user": str(defaults["user"].default),
        "tmpfs": ", ".join(f"{path} {format_size(size)}" for path, size in tmpfs.items()),
    }


_SYSTEM_TMPFS = frozenset(
    {
        "etc",
        "usr",
        "bin",
        "sbin",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "proc",
        "sys",
        "dev",
        "boot",
        "",
    }
)

# ---- network


_SENSITIVE_PORTS = {
    21: "FTP", 22: "SSH", 23: "telnet", 25: "SMTP", 53: "DNS", 111: "RPC portmapper",
    135: "MS RPC", 139: "SMB", 445: "SMB", 465: "SMTP", 587: "SMTP", 1433: "SQL Server",
    1521: "Oracle", 2049: "NFS", 2375: "Docker engine API", 2376: "Docker engine API",
    2379: "etcd", 2380: "etcd", 3306: "MySQL", 3389: "RDP", 5432: "PostgreSQL",
    5900: "VNC", 5985: "WinRM", 5986: "WinRM", 6379: "Redis", 6443: "Kubernetes API",
    9200: "Elasticsearch", 10250: "kubelet", 11211: "memcached", 27017: "MongoDB",
}  # fmt: skip

_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200")
)
_METADATA_NAMES = frozenset({"metadata.google.internal", "metadata", "instance-data"})
_INTERNAL_NAMES = frozenset(
    {"localhost", "host.docker.internal", "gateway.docker.internal", "kubernetes.default"}
)
_INTERNAL_SUFFIXES = (
    ".localhost", ".local", ".internal", ".lan", ".home.arpa", ".localdomain", ".svc",
    ".cluster.local", ".intranet", ".corp",
)  # fmt: skip
# Suffixes under which anyone can get a name (so a wildcard over them reaches strangers).
_SHARED_SUFFIXES = frozenset(
    {
        "amazonaws.com", "s3.amazonaws.com", "cloudfront.net", "herokuapp.com", "github.io",
        "githubusercontent.com", "gitlab.io", "blob.core.windows.net", "azurewebsites.net",
        "cloudapp.net", "appspot.com", "web.app", "firebaseapp.com", "vercel.app",
        "netlify.app", "pages.dev", "workers.dev", "ngrok.io", "ngrok-free.app",
        "trycloudflare.com", "onrender.com", "fly.dev", "glitch.me", "repl.co",
        "storage.googleapis.com", "run.app", "duckdns.org", "no-ip.org",
    }
)  # fmt: skip
_WILDCARD_CHARS = "*?["


def _split_host_port(entry: str) -> tuple[str, int]:
    host, _, port = entry.rpartition(":")
    return host, int(port)


def _wildcard_scope(host: str) -> str | None:
    """None (no wildcard), 'any', 'broad' (reaches strangers) or 'subdomains' (one domain)."""
    positions = [i for i, c in enumerate(host) if c in _WILDCARD_CHARS]
    if not positions:
        return None
    if not host.translate(str.maketrans("", "", "*?[]!.-")):
        return "any"  # only wildcards and separators: `*`, `*.*`
    suffix = host[positions[-1] + 1 :]
    if "]" in suffix:  # a character class `[...]`: the suffix starts after it
        suffix = suffix[suffix.index("]") + 1 :]
    if not suffix.startswith(".") or any(c in suffix for c in _WILDCARD_CHARS):
        return "broad"  # `api.*`, `*example.com` (evilexample.com), `a*.b`
    labels = suffix[1:].lower().split(".")
    if len(labels) < 2 or ".".join(labels) in _SHARED_SUFFIXES:
        return "broad"
    if len(labels) == 2 and labels[0] in {"co", "com", "org", "net", "ac", "gov", "edu"}:
        return "broad"  # `*.co.uk`: a public suffix
    return "subdomains"


def _ip_of(host: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, bool] | None:
    """The address an IP literal names, and whether it is written canonically. Also
    reads the forms C's inet_aton accepts (`127.1`, `0x7f000001`, `2130706433`, octal
    `010.0.0.1`), which resolvers and HTTP clients take as addresses too."""
    try:
        return ipaddress.ip_address(host), True
    except ValueError:
        pass
    if not re.fullmatch(r"[0-9a-fA-FxX.]+", host) or not host[0].isdigit():
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host)), False
    except OSError:
        return None


def _egress_address_checks(r: _Review, entry: str, loc: Loc, whose: str) -> bool:
    """Rules on one host:port about addresses, names and ports. True if any fired."""
    host, port = _split_host_port(entry)
    fired = len(r.findings)
    if port == 0 or port > 65535:
        r.add("SO104", loc, f"{whose}egress {entry}: port {port} does not exist")
    elif port in _SENSITIVE_PORTS:
        r.add("SO105", loc, f"{whose}egress {entry}: port {port} is {_SENSITIVE_PORTS[port]}")
    ip = _ip_of(host)
    if ip is not None:
        address, canonical = ip
        spelled = "" if canonical else f" (a non-canonical spelling of {address})"
        why = None
        if not canonical and not address.is_global:
            why = (
                f"{RULES['SO107'].why} Written this way it is not read as an IP literal: "
                "the egress proxy resolves it like a name and refuses the non-public "
                "address at connect time, so the grant is dead today; its only purpose can "
                f"be to reach {address}."
            )
        if address in _METADATA_ADDRESSES:
            r.add("SO108", loc, f"{whose}egress {entry}: cloud metadata address{spelled}", why)
        elif not address.is_global:
            kind = (
                "loopback" if address.is_loopback
                else "link-local" if address.is_link_local
                else "private" if address.is_private
                else "non-public"
            )  # fmt: skip
            r.add("SO107", loc, f"{whose}egress {entry}: {kind} address{spelled}", why)
        else:
            r.add("SO106", loc, f"{whose}egress {entry}: IP literal{spelled}")
    else:
        name = host.lower().rstrip(".")
        if name in _METADATA_NAMES:
            r.add("SO110", loc, f"{whose}egress {entry}: a cloud metadata service name")
        elif name in _INTERNAL_NAMES or name.endswith(_INTERNAL_SUFFIXES):
            r.add("SO110", loc, f"{whose}egress {entry}: an internal host name")
    return len(r.findings) > fired


def _check_network(r: _Review) -> None:
    agents = sorted(set(r.policy.runtimes) & AGENT_RUNTIMES)
    for index, entry in enumerate(r.data.get("network", {}).get("egress") or ()):
        loc = ("network", "egress", index)
        host, _ = _split_host_port(entry)
        scope = _wildcard_scope(host)
        flagged = _egress_address_checks(r, entry, loc, "")
        if scope == "any":
            r.add("SO101", loc, f"egress {entry}: any host")
        elif scope == "broad":
            r.add("SO102", loc, f"egress {entry}: wildcard reaching hosts anyone can register")
        elif scope == "subdomains":
            r.add("SO103", loc, f"egress {entry}: every subdomain of {host.split('.', 1)[1]}")
        elif agents and not flagged and host.lower() not in MODEL_API_HOSTS:
            r.add(
                "SO109",
                loc,
                f"egress {entry} is granted to a policy with agent runtimes ({', '.join(agents)})",
            )


# ---- secrets


def _check_secrets(r: _Review) -> None:
    policy = r.policy
    for name, grant in (r.data.get("secrets") or {}).items():
        base: Loc = ("secrets", name)
        if "from_env" not in grant and "from_file" not in grant:
            r.add("SO208", base, f"secret {name} has no source")
        runtimes = grant.get("runtimes") or []
        if not runtimes:
            r.add("SO207", base, f"secret {name} names no runtime")
        for index, runtime in enumerate(runtimes):
            loc = (*base, "runtimes", index)
            if runtime in GENERAL_RUNTIMES:
                r.add("SO204", loc, f"secret {name} is granted to the {runtime} runtime")
            elif runtime not in KNOWN_RUNTIMES:
                r.add("SO205", loc, f"secret {name} is granted to {runtime!r}, which no preset is")
            if runtime in KNOWN_RUNTIMES and runtime not in policy.runtimes:
                r.add("SO206", loc, f"secret {name}: runtime {runtime} is not in `runtimes`")
        if "egress" not in grant:
            r.add("SO201", base, f"secret {name} has no egress list (nodes holding it: no egress)")
            continue
        hosts = set()
        wide_subdomains = False
        for index, entry in enumerate(grant["egress"]):
            loc = (*base, "egress", index)
            host, _ = _split_host_port(entry)
            hosts.add(host.lower())
            scope = _wildcard_scope(host)
            _egress_address_checks(r, entry, loc, f"secret {name}: ")
            if scope in ("any", "broad"):
                r.add("SO202", loc, f"secret {name} may be sent to any host matching {entry}")
            elif scope == "subdomains":
                wide_subdomains = True
        if len(hosts) > 1 or wide_subdomains:
            shown = ", ".join(grant["egress"])
            r.add(
                "SO203", (*base, "egress"), f"secret {name} may go to more than one host: {shown}"
            )


# ---- mounts

_HOME_TOPS = frozenset({"home", "root", "Users"})
_SYSTEM_TOPS = frozenset(
    {
        "etc", "var", "run", "proc", "sys", "dev", "boot", "usr", "bin", "sbin", "lib",
        "lib32", "lib64", "libx32",
    }
)  # fmt: skip
_CREDENTIAL_PARTS = frozenset(
    {
        ".ssh", ".aws", ".azure", ".kube", ".docker", ".gnupg", "gcloud", ".gcloud",
        ".netrc", ".npmrc", ".pypirc", ".git-credentials", ".vault-token", ".terraform.d",
        ".config", ".password-store", ".cargo", "credentials",
    }
)  # fmt: skip


def _mount_scope(source: str) -> str:
    """workdir | subdir | above | root | home | system | absolute."""
    if source.startswith("~"):
        return "home"
    normal = posixpath.normpath(source)
    if source.startswith("/"):
        parts = [p for p in normal.split("/") if p]
        if not parts:
            return "root"
        if parts[0] in _HOME_TOPS:
            return "home"
        if parts[0] in _SYSTEM_TOPS or normal.endswith(".sock"):
            return "system"
        return "absolute"
    if normal == ".." or normal.startswith("../"):
        return "above"
    return "workdir" if normal == "." else "subdir"


def _credential_part(source: str) -> str | None:
    for part in posixpath.normpath(source).split("/"):
        if part in _CREDENTIAL_PARTS or part == ".env" or part.startswith(".env."):
            return part
    return None


def _check_mounts(r: _Review) -> None:
    for index, grant in enumerate(r.data.get("mounts") or ()):
        base: Loc = ("mounts", index)
        source, modes = grant["source"], grant["modes"]
        scope = _mount_scope(source)
        source_loc = (*base, "source")
        if not modes:
            r.add("SO409", (*base, "modes"), f"mount {source} grants no mode")
        writable = [i for i, mode in enumerate(modes) if mode == "rw"]
        is_git = posixpath.normpath(source).split("/")[0] == ".git"
        for mode_index in writable:
            loc = (*base, "modes", mode_index)
            if scope == "workdir" or (scope == "subdir" and is_git):
                r.add("SO401", loc, f"mount {source} is writable (the checkout itself)")
            elif scope == "subdir":
                r.add("SO402", loc, f"mount {source} is writable")
            else:
                r.add("SO403", loc, f"mount {source} is writable, outside the workflow directory")
        if scope == "above":
            r.add("SO404", source_loc, f"mount {source} reaches above the workflow directory")
        elif scope in ("root", "home", "system"):
            what = {"root": "the host root", "home": "a home directory"}.get(
                scope, "a socket" if source.endswith(".sock") else "a system directory"
            )
            r.add("SO405", source_loc, f"mount {source} is {what}")
        elif scope == "absolute":
            r.add("SO406", source_loc, f"mount {source} is an absolute host path")
        elif scope == "workdir" and modes and not writable:
            r.add("SO408", source_loc, f"mount {source} read-only: nodes see the whole directory")
        part = _credential_part(source)
        if part and scope not in ("root", "home", "system"):
            r.add("SO407", source_loc, f"mount {source} holds credentials ({part})")


# ---- images

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def _looks_like_registry(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost"


def _check_images(r: _Review) -> None:
    for index, pattern in enumerate(r.data.get("images") or ()):
        loc = ("images", index)
        positions = [i for i, c in enumerate(pattern) if c in _WILDCARD_CHARS]
        if not positions:
            if _DIGEST.search(pattern):
                continue
            if pattern.startswith(LOCAL_IMAGE_NAMESPACE):
                r.add("SO506", loc, f"image {pattern} is not pinned (local build)")
            else:
                r.add("SO505", loc, f"image {pattern} is not pinned by digest")
            continue
        prefix = pattern[: positions[0]]
        if "/" not in prefix:
            r.add("SO501", loc, f"image pattern {pattern!r} matches any image")
            continue
        first, rest = prefix.split("/", 1)
        if _looks_like_registry(first) and ("/" not in rest or rest == "library/"):
            # `docker.io/*`, `ghcr.io/my*` (any namespace starting so): the whole registry
            r.add("SO502", loc, f"image pattern {pattern!r} matches any image on {first}")
        elif prefix.startswith(LOCAL_IMAGE_NAMESPACE):
            r.add("SO504", loc, f"image pattern {pattern!r} matches any local sandbox-orch image")
        else:
            r.add("SO503", loc, f"image pattern {pattern!r} matches a whole namespace")


# ---- limits

_HIGH = {
    "cpus": 8.0,
    "memory": 8 * 1024**3,
    "pids": 4096,
    "timeout": 6 * 3600.0,
    "output": 256 * 1024**2,
    "artifacts": 16 * 1024**3,
    "artifacts_total": 32 * 1024**3,  # memory held by a run's artifact volumes at once
    "tmpfs": 1024**3,
}
_LIMIT_KEYS = ("cpus", "memory", "pids", "timeout", "output", "artifacts")
_DEFAULT_KEYS = ("cpus", "memory", "pids", "timeout")


def format_duration(seconds: float) -> str:
    for unit, factor in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= factor and seconds % factor == 0:
            return f"{int(seconds // factor)}{unit}"
    return f"{seconds:g}s"


def _show(key: str, value: float) -> str:
    if key in ("memory", "output", "artifacts", "artifacts_total", "tmpfs"):
        return format_size(int(value))
    if key == "timeout":
        return format_duration(value)
    return f"{value:g}"


def _check_limits(r: _Review) -> None:
    policy = r.policy
    blocks = (
        ("limits", policy.limits, BUILTIN_LIMITS, _LIMIT_KEYS, "SO601", "ceiling"),
        ("defaults", policy.defaults, BUILTIN_DEFAULTS, _DEFAULT_KEYS, "SO602", "default"),
    )
    for block, values, builtin, keys, missing_rule, noun in blocks:
        for key in keys:
            value = getattr(values, key)
            if r.has((block, key)) and value > _HIGH[key]:
                r.add(
                    "SO610",
                    (block, key),
                    f"{block}.{key} {_show(key, value)} is above {_show(key, _HIGH[key])}",
                )
        missing = [k for k in keys if not r.has((block, k))]
        if missing:
            shown = ", ".join(f"{k} {_show(k, getattr(builtin, k))}" for k in missing)
            state = "not set" if not r.has((block,)) else "partial"
            r.add(
                missing_rule,
                (block,),
                f"{block} {state}: the built-in {noun}s apply: {shown}",
            )
    total = policy.limits.artifacts_total  # optional: 4 x artifacts when unset
    if r.has(("limits", "artifacts_total")) and total > _HIGH["artifacts_total"]:
        shown = _show("artifacts_total", total)
        high = _show("artifacts_total", _HIGH["artifacts_total"])
        r.add(
            "SO610",
            ("limits", "artifacts_total"),
            f"limits.artifacts_total {shown} is above {high}",
        )
    for key in _DEFAULT_KEYS:
        default, ceiling = getattr(policy.defaults, key), getattr(policy.limits, key)
        if default > ceiling:
            r.add(
                "SO611",
                ("defaults", key),
                f"defaults.{key} {_show(key, default)} is above limits.{key} {_show(key, ceiling)}",
            )


# --------------------------------------------------------------------------- privileges


def privileges(plan: Plan, sandboxes: dict[str, Sandbox]) -> dict[str, dict[str, Any]]:
    """Each node's effective sandbox as admission granted it (`Sandbox.describe()`), with
    the runtime it runs. Nothing re-derived: what describe() says is what the node gets."""
    return {
        name: {"runtime": node.runtime.name, **sandboxes[name].describe()}
        for name, node in plan.nodes.items()
        if name in sandboxes
    }


# --------------------------------------------------------------------------- changes


class _Diff:
    def __init__(self, old: Policy, new: Policy) -> None:
        self.old, self.new = old, new
        self.changes: list[Change] = []

    def _add(self, direction: str, area: str, summary: str, policy: Policy, loc: Loc) -> None:
        doc = policy.document
        self.changes.append(
            Change(direction, area, summary, doc.path, doc.line_of(loc), dotted(loc))
        )

    def widens(self, area: str, summary: str, loc: Loc) -> None:
        self._add("widens", area, summary, self.new, loc)

    def narrows(self, area: str, summary: str, loc: Loc, *, removed: bool = False) -> None:
        self._add("narrows", area, summary, self.old if removed else self.new, loc)

    def widens_removed(self, area: str, summary: str, loc: Loc) -> None:
        """A widening that is a removal (e.g. an env deny entry): located in the old file."""
        self._add("widens", area, summary, self.old, loc)

    def changes_(self, area: str, summary: str, loc: Loc) -> None:
        self._add("changes", area, summary, self.new, loc)


def _covered(item: str, patterns: Iterable[str]) -> bool:
    return any(item == p or fnmatch.fnmatchcase(item, p) for p in patterns)


def _list_of(policy: Policy, *path: str) -> list[Any]:
    data: Any = policy.document.data
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    return list(data or ())


def _compare_patterns(d: _Diff, area: str, noun: str, path: tuple[str, ...]) -> None:
    old, new = _list_of(d.old, *path), _list_of(d.new, *path)
    for index, item in enumerate(new):
        if not _covered(item, old):
            d.widens(area, f"{noun} {item} granted", (*path, index))
    for index, item in enumerate(old):
        if not _covered(item, new):
            d.narrows(area, f"{noun} {item} no longer granted", (*path, index), removed=True)


_ACCESS = ("no access", "ro", "rw")  # rw reads too: each level includes the ones before


def _mount_table(policy: Policy) -> dict[str, tuple[int, int]]:
    """Normalised source -> (index of its first grant, access level 0/1/2)."""
    table: dict[str, tuple[int, int]] = {}
    for index, grant in enumerate(_list_of(policy, "mounts")):
        key = posixpath.normpath(grant["source"])
        level = 2 if "rw" in grant["modes"] else 1 if "ro" in grant["modes"] else 0
        first, before = table.get(key, (index, 0))
        table[key] = (first, max(before, level))
    return table


def _compare_mounts(d: _Diff) -> None:
    old, new = _mount_table(d.old), _mount_table(d.new)
    for source, (index, level) in new.items():
        before = old.get(source, (index, 0))[1]
        if source not in old and level:
            loc: Loc = ("mounts", index, "source")
            d.widens("mounts", f"mount {source} granted ({_ACCESS[level]})", loc)
        elif level > before:
            summary = f"mount {source} {_ACCESS[before]} -> {_ACCESS[level]}"
            d.widens("mounts", summary, ("mounts", index, "modes"))
        elif level < before:
            summary = f"mount {source} {_ACCESS[before]} -> {_ACCESS[level]}"
            d.narrows("mounts", summary, ("mounts", index, "modes"))
    for source, (index, level) in old.items():
        if source not in new and level:
            loc = ("mounts", index, "source")
            d.narrows("mounts", f"mount {source} no longer granted", loc, removed=True)


def _compare_secrets(d: _Diff) -> None:
    """A node gets a secret only if its runtime is named and its egress lies within the
    secret's egress list (a missing list is an empty one): more of either widens."""
    old = d.old.document.data.get("secrets") or {}
    new = d.new.document.data.get("secrets") or {}
    for name, grant in new.items():
        base: Loc = ("secrets", name)
        runtimes, egress = grant.get("runtimes") or [], grant.get("egress") or []
        if name not in old:
            to = ", ".join(runtimes) or "no runtime"
            shown = f"to {to}; egress {', '.join(egress) or 'none'}"
            d.widens("secrets", f"secret {name} granted ({shown})", base)
            continue
        before = old[name]
        runtimes_before = before.get("runtimes") or []
        egress_before = before.get("egress") or []
        for index, runtime in enumerate(runtimes):
            if runtime not in runtimes_before:
                loc = (*base, "runtimes", index)
                d.widens("secrets", f"secret {name} now granted to {runtime}", loc)
        for index, runtime in enumerate(runtimes_before):
            if runtime not in runtimes:
                loc = (*base, "runtimes", index)
                summary = f"secret {name} no longer granted to {runtime}"
                d.narrows("secrets", summary, loc, removed=True)
        for index, entry in enumerate(egress):
            if not _covered(entry, egress_before):
                loc = (*base, "egress", index)
                d.widens("secrets", f"secret {name} may now be sent to {entry}", loc)
        for index, entry in enumerate(egress_before):
            if not _covered(entry, egress):
                loc = (*base, "egress", index)
                summary = f"secret {name} no longer sent to {entry}"
                d.narrows("secrets", summary, loc, removed=True)
        for key in ("from_env", "from_file"):
            if grant.get(key) != before.get(key):
                shown = f"{before.get(key) or '-'} -> {grant.get(key) or '-'}"
                d.changes_("secrets", f"secret {name}: {key} {shown}", (*base, key))
    for name in old:
        if name not in new:
            summary = f"secret {name} no longer granted"
            d.narrows("secrets", summary, ("secrets", name), removed=True)


def _uid_below(user: str) -> bool:
    return min(int(part) for part in user.split(":")) < 10000


def _compare_isolation(d: _Diff) -> None:
    old, new = d.old, d.new
    loc: Loc = ("isolation", "oci_runtime")
    if old.oci_runtime == "runsc" and new.oci_runtime == "runc":
        d.widens("isolation", "oci_runtime runsc -> runc: nodes leave gVisor", loc)
    elif old.oci_runtime == "runc" and new.oci_runtime == "runsc":
        d.narrows("isolation", "oci_runtime runc -> runsc: nodes run under gVisor", loc)
    if old.user != new.user:
        summary = f"user {old.user} -> {new.user}"
        if _uid_below(new.user) and not _uid_below(old.user):
            d.widens("isolation", summary + " (a likely host account)", ("isolation", "user"))
        elif _uid_below(old.user) and not _uid_below(new.user):
            d.narrows("isolation", summary + " (a dedicated uid)", ("isolation", "user"))
        else:
            d.changes_("isolation", summary, ("isolation", "user"))
    for path, size in new.tmpfs.items():
        loc = ("isolation", "tmpfs", path)
        if path not in old.tmpfs:
            d.widens("isolation", f"tmpfs {path} ({format_size(size)}) added", loc)
        elif size > old.tmpfs[path]:
            d.widens(
                "isolation",
                f"tmpfs {path} {format_size(old.tmpfs[path])} -> {format_size(size)}",
                loc,
            )
        elif size < old.tmpfs[path]:
            d.narrows(
                "isolation",
                f"tmpfs {path} {format_size(old.tmpfs[path])} -> {format_size(size)}",
                loc,
            )
    for path, size in old.tmpfs.items():
        if path not in new.tmpfs:
            loc = ("isolation", "tmpfs", path)
            d.narrows("isolation", f"tmpfs {path} ({format_size(size)}) removed", loc, removed=True)


def _compare_limits(d: _Diff) -> None:
    blocks: tuple[tuple[str, Limits, Limits, tuple[str, ...]], ...] = (
        ("limits", d.old.limits, d.new.limits, _LIMIT_KEYS),
        ("defaults", d.old.defaults, d.new.defaults, _DEFAULT_KEYS),
    )
    for block, old, new, keys in blocks:
        for key in keys:
            before, after = getattr(old, key), getattr(new, key)
            if before == after:
                continue
            summary = f"{block}.{key} {_show(key, before)} -> {_show(key, after)}"
            if after > before:
                d.widens(block, summary, (block, key))
            else:
                d.narrows(block, summary, (block, key))


def _compare_env(d: _Diff) -> None:
    old = _list_of(d.old, "env", "deny")
    new = _list_of(d.new, "env", "deny")
    old_upper, new_upper = {n.upper() for n in old}, {n.upper() for n in new}
    for index, name in enumerate(old):
        if name.upper() not in new_upper:
            d.widens_removed("env", f"env {name} no longer denied", ("env", "deny", index))
    for index, name in enumerate(new):
        if name.upper() not in old_upper:
            d.narrows("env", f"env {name} now denied", ("env", "deny", index))


_AREAS = (
    "runtimes",
    "images",
    "egress",
    "mounts",
    "secrets",
    "isolation",
    "limits",
    "defaults",
    "env",
    "policy",
)
_DIRECTIONS = ("widens", "narrows", "changes")


def compare(old: Policy, new: Policy) -> list[Change]:
    """What changing from `old` to `new` widens, narrows or otherwise changes. Additions and
    value changes are located in the new file, removals in the old one."""
    d = _Diff(old, new)
    _compare_patterns(d, "runtimes", "runtime", ("runtimes",))
    _compare_patterns(d, "images", "image", ("images",))
    _compare_patterns(d, "egress", "egress", ("network", "egress"))
    _compare_mounts(d)
    _compare_secrets(d)
    _compare_isolation(d)
    _compare_limits(d)
    _compare_env(d)
    if old.name != new.name:
        d.changes_("policy", f"name {old.name} -> {new.name}", ("name",))
    return sorted(
        d.changes,
        key=lambda c: (_DIRECTIONS.index(c.direction), _AREAS.index(c.area), c.file, c.line or 0),
    )


# --------------------------------------------------------------------------- the report


def build_report(
    policy: Policy,
    *,
    privileges: dict[str, dict[str, Any]] | None = None,
    workflow: str | None = None,
    against: Policy | None = None,
    fail_on: str | None = None,
) -> Report:
    return Report(
        policy=policy,
        findings=review(policy),
        privileges=privileges,
        workflow=workflow,
        against=against,
        changes=compare(against, policy) if against is not None else None,
        fail_on=fail_on,
    )


def _policy_ref(policy: Policy) -> dict[str, str]:
    return {"name": policy.name, "path": policy.path, "sha256": policy.sha256}


def to_json(report: Report) -> dict[str, Any]:
    """The `--format json` document (schema sandbox-orch/policy-review@1)."""
    return {
        "schema": "sandbox-orch/policy-review@1",
        "policy": _policy_ref(report.policy),
        "summary": {**report.counts(), "total": len(report.findings)},
        "fail_on": report.fail_on,
        "failed": report.failed,
        "findings": [asdict(f) for f in report.findings],
        "workflow": report.workflow,
        "privileges": report.privileges,
        "against": _policy_ref(report.against) if report.against else None,
        "changes": [asdict(c) for c in report.changes] if report.changes is not None else None,
    }


_SARIF_LEVEL = {
    "critical": "error",
    "high": "error",
    "medium": "warning",
    "low": "note",
    "info": "note",
}
_SECURITY_SEVERITY = {
    "critical": "9.5",
    "high": "8.0",
    "medium": "5.5",
    "low": "3.0",
    "info": "0.0",
}


def artifact_uri(path: str) -> str:
    candidate = Path(path)
    if candidate.is_absolute():
        return candidate.as_uri()
    return quote(candidate.as_posix())


def to_sarif(report: Report) -> dict[str, Any]:
    """A SARIF 2.1.0 log: every rule in the driver, one result per finding."""
    rules = list(RULES.values())
    index = {rule.id: i for i, rule in enumerate(rules)}
    driver = {
        "name": "sandbox-orch",
        "version": __version__,
        "semanticVersion": __version__,
        "informationUri": INFORMATION_URI,
        "rules": [
            {
                "id": rule.id,
                "name": rule.name,
                "shortDescription": {"text": rule.summary},
                "fullDescription": {"text": rule.why},
                "help": {"text": rule.fix, "markdown": f"**Fix:** {rule.fix}"},
                "defaultConfiguration": {"level": _SARIF_LEVEL[rule.severity]},
                "properties": {
                    "security-severity": _SECURITY_SEVERITY[rule.severity],
                    "severity": rule.severity,
                    "tags": ["security", "policy"],
                },
            }
            for rule in rules
        ],
    }
    results = [
        {
            "ruleId": f.id,
            "ruleIndex": index[f.id],
            "level": _SARIF_LEVEL[f.severity],
            "message": {"text": f"{f.title}. {f.why} Fix: {f.fix}"},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": artifact_uri(f.file)},
                        "region": {"startLine": f.line or 1},
                    },
                    "logicalLocations": [{"fullyQualifiedName": f.field, "kind": "member"}]
                    if f.field
                    else [],
                }
            ],
            "properties": {"severity": f.severity, "field": f.field},
        }
        for f in report.findings
    ]
    run: dict[str, Any] = {"tool": {"driver": driver}, "results": results}
    extra = {
        key: value
        for key, value in (
            ("privileges", report.privileges),
            (
                "changes",
                [asdict(c) for c in report.changes] if report.changes is not None else None,
            ),
        )
        if value is not None
    }
    if extra:
        run["properties"] = extra
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}


# --------------------------------------------------------------------------- the table

_STYLE = {
    "critical": "bold white on red",
    "high": "bold red",
    "medium": "yellow",
    "low": "cyan",
    "info": "dim",
    "widens": "bold red",
    "narrows": "green",
    "changes": "yellow",
}


def _where(file: str, line: int | None) -> str:
    return f"{file}:{line}" if line else file


def _compact(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_compact(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(_compact(v) for v in value) or "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def to_table(report: Report) -> list[RenderableType]:
    """Rich renderables for `--format table`: readable in a terminal and in CI logs."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    out: list[RenderableType] = []
    counts = report.counts()
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no findings"
    out.append(Text(f"policy {report.policy.name} ({report.policy.path}): {summary}", style="bold"))
    if report.findings:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 1, 0))
        table.add_column("severity", no_wrap=True)
        table.add_column("id", no_wrap=True)
        table.add_column("where", no_wrap=True)  # file:line stays whole: it is grepped
        table.add_column("finding", ratio=1)
        seen: set[tuple[str, str, str]] = set()
        for f in report.findings:
            text = Text()
            text.append(f.title, style="bold")
            if (f.id, f.why, f.fix) in seen:
                text.append(f"\nwhy and fix: as for {f.id} above", style="dim")
            else:
                seen.add((f.id, f.why, f.fix))
                text.append(f"\n{f.why}")
                text.append("\nfix: ", style="bold")
                text.append(f.fix)
            table.add_row(
                Text(f.severity, style=_STYLE[f.severity]), f.id, _where(f.file, f.line), text
            )
        out.append(table)
    if report.privileges is not None:
        out.append(Text(f"\nnode privileges (workflow {report.workflow})", style="bold"))
        out.append(_privileges_table(report.privileges))
    if report.changes is not None and report.against is not None:
        widened = sum(c.direction == "widens" for c in report.changes)
        narrowed = sum(c.direction == "narrows" for c in report.changes)
        out.append(
            Text(
                f"\nchanges from {report.against.path}: {widened} widen, {narrowed} narrow",
                style="bold",
            )
        )
        if report.changes:
            table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
            for name in ("change", "area", "what"):
                table.add_column(name, overflow="fold")
            table.add_column("where", no_wrap=True)
            for c in report.changes:
                table.add_row(
                    Text(c.direction, style=_STYLE[c.direction]),
                    c.area,
                    c.summary,
                    _where(c.file, c.line),
                )
            out.append(table)
        else:
            out.append(Text("no change in what the policy grants"))
    if report.fail_on is not None:
        at_or_above = sum(_RANK[f.severity] <= _RANK[report.fail_on] for f in report.findings)
        verdict = (
            f"FAIL: {at_or_above} finding(s) at or above {report.fail_on}"
            if report.failed
            else f"pass: nothing at or above {report.fail_on}"
        )
        out.append(Text(verdict, style="bold red" if report.failed else "bold green"))
    return out


def _privileges_table(nodes: dict[str, dict[str, Any]]) -> RenderableType:
    """One row per privilege, grouped by node: whatever `Sandbox.describe()` reports."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("node", no_wrap=True, style="bold")
    table.add_column("privilege", no_wrap=True)
    table.add_column("granted", overflow="fold")
    for number, (name, node) in enumerate(nodes.items()):
        if number:
            table.add_section()
        for row, (key, value) in enumerate(node.items()):
            table.add_row(name if row == 0 else "", key, _compact(value))
    return table
