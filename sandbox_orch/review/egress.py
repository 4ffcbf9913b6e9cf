"""Rules on network egress: suffix grants by breadth, ports, IP literals, internal names,
agents' extra hosts, private-name opt-ins (SO102-SO111). The address checks also serve
the secrets' egress lists."""

from __future__ import annotations

import functools
import ipaddress
import re
import socket

from ..egress.grants import SUFFIX_MARK, normalise_host
from ..yamlsafe import Loc
from .checking import AGENT_RUNTIMES, MODEL_API_HOSTS, _Review
from .rules import RULES

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


@functools.cache
def _all_suffixes():  # type: ignore[no-untyped-def]
    """The whole Public Suffix List, with its private section (domains under which their
    owner lets anyone have a name: github.io, githubusercontent.com, cloudfront.net...)."""
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


def _wildcard_scope(host: str) -> str | None:
    """None (an exact host), 'broad' (a suffix under which anyone can publish) or
    'subdomains' (the names below one owner's domain). The policy schema has already
    refused `*` alone, public suffixes (`*.com`) and `*` anywhere but the first label."""
    if not host.startswith(SUFFIX_MARK):
        return None
    domain = normalise_host(host.removeprefix(SUFFIX_MARK))
    shared = _all_suffixes().is_public(domain) or domain in _SHARED_SUFFIXES
    return "broad" if shared else "subdomains"


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
    if port in _SENSITIVE_PORTS:  # out of range: refused by the schema
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
        if scope == "broad":
            r.add("SO102", loc, f"egress {entry}: every name under a shared hosting domain")
        elif scope == "subdomains":
            r.add("SO103", loc, f"egress {entry}: every name below {host.split('.', 1)[1]}")
        elif agents and not flagged and host.lower() not in MODEL_API_HOSTS:
            r.add(
                "SO109",
                loc,
                f"egress {entry} is granted to a policy with agent runtimes ({', '.join(agents)})",
            )
    for index, entry in enumerate(r.data.get("network", {}).get("private_names") or ()):
        loc = ("network", "private_names", index)
        r.add("SO111", loc, f"private name {entry}: may resolve to a private or loopback address")
