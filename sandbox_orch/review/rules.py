"""The rule catalogue: each rule's stable id, severity, name, summary, why and fix (the
table in the package docstring lists them). An id is never renumbered or reused."""

from __future__ import annotations

from dataclasses import dataclass


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
    # SO101 (egress to any host: `*`, `*:443`) is retired: the policy schema refuses
    # such grants since egress matches domain suffixes; the id is never reused.
    Rule(
        "SO102", "high", "egress-broad-wildcard", "Egress suffix over a shared hosting domain",
        "Anyone can get a name under this suffix (githubusercontent.com, amazonaws.com, "
        "cloudfront.net, github.io, ...) and host content there: the grant reaches servers "
        "that strangers control. It is an exfiltration channel (a node uploads the "
        "workspace or its key to an attacker's bucket or site, through a name that looks "
        "trusted) and a source of code nobody reviewed.",
        "Name the exact hosts nodes need (e.g. \"raw.githubusercontent.com:443\"), or a "
        "suffix of a domain you own: \"*.example.com:443\".",
    ),
    Rule(
        "SO103", "medium", "egress-subdomain-wildcard", "Egress suffix over one domain",
        "The suffix covers every present and future name below the domain, including ones "
        "that host user content or are taken over after a DNS record goes stale. Narrower "
        "than a shared hosting suffix (SO102): one owner decides what lives there.",
        "List the exact hosts nodes need instead of the suffix, or a narrower suffix.",
    ),
    # SO104 (egress port 0 or above 65535) is retired: the policy schema refuses it.
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
        "service. Names that resolve to private addresses are refused at connect time "
        "(unless listed in `network.private_names`), so this grant is either dead or "
        "relies on that one check alone.",
        "Remove the grant.",
    ),
    Rule(
        "SO111", "medium", "egress-private-name", "Egress opt-in to a private address",
        "A name listed in `network.private_names` may resolve to a private or loopback "
        "address: nodes granted it reach a host inside the operator's network (or the "
        "host itself), where services often trust whoever connects. Whoever controls the "
        "name's DNS decides which internal address that is.",
        "Keep it to the one internal service nodes need (a package mirror), on its "
        "service port, in a policy for trusted workflows; serve it authenticated.",
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
        "SO202", "critical", "secret-egress-any", "Secret that may be sent to anyone's host",
        "The secret's egress includes a suffix under which anyone can host a server "
        "(a shared hosting domain): a node holding the secret may send it to a server of "
        "its choice there.",
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
    Rule(
        "SO209", "medium", "secret-env-agent", "Agent's secret in its environment",
        "The agent holds the value: any process in its node reads it from the environment "
        "or from /proc/*/environ, and the engine shows it in `docker inspect` while the "
        "node runs. A prompt-injected agent can send it to any host it may reach, or "
        "encode it (reversed, split) into its outputs where no redaction recognises it, "
        "and the key stays usable after the run.",
        "Broker it: `broker: {upstream: \"https://API_HOST\", header: x-api-key}` (or "
        "`authorization: Bearer`). The node then holds a placeholder, and the run's egress "
        "proxy adds the key to the node's requests to that upstream only (docs/security.md).",
    ),
    Rule(
        "SO210", "low", "secret-env", "Secret in a node's environment",
        "The node holds the value: any process in it reads it from the environment or "
        "from /proc/*/environ, and can encode it past redaction into its outputs or send "
        "it to the hosts the node may reach.",
        "If it is an HTTP API credential, broker it (`broker:`, docs/security.md); if a "
        "program must hold it, keep the node's egress to the one host that needs it.",
    ),
    Rule(
        "SO211", "low", "broker-ca-bundle", "Brokered upstream verified by the policy's own CA",
        "The proxy trusts the named CA bundle instead of the system trust store for this "
        "upstream: whoever holds that CA's key can present a certificate for it and "
        "receive the secret.",
        "Use the system trust store (remove `ca_bundle`) unless the upstream is a private "
        "gateway whose CA you control; then keep the bundle to that one CA.",
    ),
    Rule(
        "SO212", "low", "broker-scope-broad", "Broker wider than the API it is for",
        "A brokered secret is added to every request within its paths and methods: the "
        "path `/` (the upstream's whole surface, account and admin endpoints included) or "
        "methods beyond GET and POST let a node do more with the key than call the API.",
        "List the API's path prefix (e.g. `paths: [\"/v1/\"]`) and the methods it uses.",
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
    # ---- agent settings
    Rule(
        "SO801", "high", "agent-bypass-permissions", "Agents may bypass their permission checks",
        "With bypassPermissions an agent runs every tool without asking, whatever it was "
        "told by the content it reads (prompt injection): the sandbox is then the only "
        "thing between an injected instruction and everything the node can reach (its "
        "mounts, its API key, its egress).",
        "List the modes nodes may use without it: "
        "`agents: {permission_modes: [default, acceptEdits, plan]}`.",
    ),
    Rule(
        "SO802", "medium", "agent-no-budget-ceiling", "No spend ceiling for agent runs",
        "A workflow may run agents that spend without limit (a loop, a long stream, an "
        "injected task): nothing stops a run whose workflow sets no budget, or a large one.",
        "Set a blocking ceiling: `agents: {budget: {usd: 10}}` (and `tokens` if you like); "
        "workflows may ask for less, never more.",
    ),
    Rule(
        "SO803", "low", "agent-tools-unrestricted", "Agents may pre-approve any tool",
        "A node's `allowed_tools` lets the agent use those tools without asking: with no "
        "tool ruled out, a workflow may pre-approve Bash (any command) or web access.",
        "List the tools no node may pre-approve: `agents: {never_allow_tools: [Bash, "
        "WebFetch, WebSearch]}` (leave Bash out if agents must run commands).",
    ),
    Rule(
        "SO804", "info", "agent-models-unrestricted", "Agents may use any model",
        "Workflows choose the model: the most expensive one, or one the operator has not "
        "vetted (a model id is passed to the API as given).",
        "List the models nodes may use: `agents: {models: [\"claude-sonnet-*\"]}`.",
    ),
    # ---- runtimes
    Rule(
        "SO701", "low", "runtime-unknown", "Unknown runtime granted",
        "No preset has this name: the grant does nothing today (custom runtimes are "
        "granted by `images`), and would silently grant a preset of that name added later.",
        "Remove it, or correct the spelling (shell, python, node, claude, codex).",
    ),
)  # fmt: skip
