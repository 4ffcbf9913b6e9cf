"""`sandbox-orch policy review`: a security review of a policy file (CONTRACT 2, 4).

Functional core: a `Policy` in, findings out; with a workflow's admitted sandboxes, each
node's effective privileges; with an older policy, what the change widens or narrows. Pure:
nothing here reads a file or talks to an engine. The command line loads and prints.

Rule ids are stable: a rule is never renumbered and an id is never reused (retire it).
Retired: SO101 (egress to any host) and SO104 (egress port 0 or above 65535): since
egress grants may be domain suffixes, the policy schema refuses both (exit 2).
Severities: critical > high > medium > low > info.

| id    | severity | what it flags |
|-------|----------|---------------|
| SO102 | high     | egress suffix over a shared hosting domain (`*.githubusercontent.com`) |
| SO103 | medium   | egress suffix over one owner's domain (`*.example.com`) |
| SO105 | medium   | egress to a shell, mail, DNS, database or control-plane port (22, 2375...) |
| SO106 | medium   | egress to a public IP literal |
| SO107 | high     | egress to a private, loopback, link-local or otherwise non-public IP literal |
| SO108 | critical | egress to a cloud metadata address (169.254.169.254, ...) |
| SO109 | medium   | agent runtimes granted egress beyond their model APIs |
| SO110 | medium   | egress to an internal host name (localhost, *.internal, metadata names...) |
| SO111 | medium   | a name opted in to private addresses (`network.private_names`) |
| SO201 | low      | secret with no egress list (implicit: nodes holding it get no egress) |
| SO202 | critical | secret that may be sent to a shared hosting suffix (anyone's host) |
| SO203 | medium   | secret whose egress is more than its one API host |
| SO204 | high     | secret granted to a general-purpose runtime (shell, python, node) |
| SO205 | high     | secret granted to a runtime name no preset has (a workflow defines it) |
| SO206 | low      | secret granted to a runtime the policy does not allow (dead grant) |
| SO207 | low      | secret that names no runtime (dead grant) |
| SO208 | low      | secret with no source (neither from_env nor from_file) |
| SO209 | medium   | an agent runtime's secret delivered in its environment (not brokered) |
| SO210 | low      | a secret delivered in a node's environment (not brokered) |
| SO211 | low      | a brokered upstream verified against the policy's own CA bundle |
| SO212 | low      | a broker that allows the path `/` or methods beyond GET and POST |
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
| SO801 | high     | agents may use bypassPermissions (listed, or no `agents.permission_modes`) |
| SO802 | medium   | agents granted with no blocking usd or tokens ceiling (`agents.budget`) |
| SO803 | low      | agents may pre-approve Bash, or any tool (`agents.never_allow_tools`) |
| SO804 | info     | agents may use any model (no `agents.models`) |
| SO701 | low      | `runtimes` names a runtime that is not a preset (a typo, or a future preset) |
"""

from __future__ import annotations

from .as_json import to_json
from .as_sarif import INFORMATION_URI, SARIF_SCHEMA, artifact_uri, to_sarif
from .as_table import print_table, to_table
from .changes import compare
from .checking import (
    AGENT_RUNTIMES,
    GENERAL_RUNTIMES,
    KNOWN_RUNTIMES,
    LOCAL_IMAGE_NAMESPACE,
    MODEL_API_HOSTS,
)
from .egress import _ip_of as _ip_of  # the unit tests read these two directly
from .egress import _wildcard_scope as _wildcard_scope
from .findings import review
from .limits import format_duration
from .model import SEVERITIES, Change, Finding, Report, failing
from .node_privileges import privileges
from .report import build_report
from .rules import RULES, Rule

__all__ = [
    "AGENT_RUNTIMES",
    "GENERAL_RUNTIMES",
    "INFORMATION_URI",
    "KNOWN_RUNTIMES",
    "LOCAL_IMAGE_NAMESPACE",
    "MODEL_API_HOSTS",
    "RULES",
    "SARIF_SCHEMA",
    "SEVERITIES",
    "Change",
    "Finding",
    "Report",
    "Rule",
    "artifact_uri",
    "build_report",
    "compare",
    "failing",
    "format_duration",
    "print_table",
    "privileges",
    "review",
    "to_json",
    "to_sarif",
    "to_table",
]
