"""The egress proxy: the only way out of a sandbox, and only to what was granted.

Nodes keep network `none`, also when they have egress (gVisor cannot join Docker networks
here, ENGINE.md). For each node with egress, the orchestrator listens on a Unix socket in
a directory of its own, bind-mounted read-only into that node at /run/egress; inside,
`sandbox-orch-egress` forwards 127.0.0.1:3128 to it. One socket per node means the proxy
knows whose allowlist applies without trusting anything the node says.

The proxy speaks HTTP forward-proxy: CONNECT host:port (for TLS) and absolute-form plain
HTTP requests. Request heads are parsed with h11, never by hand. A target must be granted
as `host:port`, or fall under a `*.domain:port` suffix grant; it is matched as the client
named it (normalised: lower case, no trailing dot, IDNA), before any resolution. A name is
then resolved once, here, and refused if any address it resolves to is not globally
routable (private, loopback, link-local, metadata, ...) unless the grant is that IP
literal, or the policy opts the exact name in (`network.private_names`: private and
loopback addresses, never link-local). The proxy connects to the address it checked, so a
second DNS answer cannot redirect it (no rebinding). Every refusal is recorded.

A granted target that cannot be reached (its name does not resolve, the connection is
refused or times out) is reported as it happens (`on_unreachable`), once per node, target
and reason: the agents' CLIs retry with backoff, silently, for minutes.

Brokered secrets (broker.py): a node may also send plain-HTTP requests to
`http://127.0.0.1:3128/_broker/<host>/...`; the proxy checks them against the node's
`Brokered` entries, puts the real credential in place of the node's placeholder and opens
verified TLS to the upstream itself, so that the key never enters the sandbox.
"""

from __future__ import annotations

from ..lazyexports import lazy_exports

# Each name from the submodule that defines it, imported on first use: checking a
# workflow needs only grants.py, not the proxy's event loop, h11 and TLS (the command
# line answers sooner).
_HOMES = {
    "Brokered": "broker",
    "base_url": "broker",
    "Grant": "grants",
    "GrantError": "grants",
    "Resolver": "grants",
    "routable": "grants",
    "system_resolver": "grants",
    "PROXY_URL": "http",
    "Refused": "http",
    "CONNECT_TIMEOUT": "core",
    "Proxy": "core",
    "Unreachable": "core",
    "Violation": "core",
    "why_unreachable": "core",
    "CONTAINER_DIR": "proxy",
    "SOCKET_NAME": "proxy",
    "EgressProxy": "proxy",
}


__getattr__ = lazy_exports(__name__, _HOMES)


__all__ = [
    "CONNECT_TIMEOUT",
    "CONTAINER_DIR",
    "PROXY_URL",
    "SOCKET_NAME",
    "Brokered",
    "EgressProxy",
    "Grant",
    "GrantError",
    "Proxy",
    "Refused",
    "Resolver",
    "Unreachable",
    "Violation",
    "base_url",
    "routable",
    "system_resolver",
    "why_unreachable",
]
