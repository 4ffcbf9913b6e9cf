"""What a node may reach: `host:port` and `*.domain:port` grants, how a name is spelled
before it is matched, and the addresses a name may resolve to.

Names are compared in one spelling: lower case, one trailing dot removed, IDNA (UTS 46
mapping, A-labels), so `Bücher.example.`, `bücher.example` and `xn--bcher-kva.example`
are one name; a name that is not valid IDNA is refused, saying why. An IP literal is kept
in its canonical form. `*.example.com` matches names strictly below example.com, never
example.com itself: as a TLS wildcard certificate does, and because the apex is often
another service (grant it with one more line if it is meant).
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import idna

Resolver = Callable[[str, int], Awaitable[list[str]]]

SUFFIX_MARK = "*."


class GrantError(ValueError):
    """A grant (or a name asked for) that cannot be honoured; the message says why."""


@functools.cache
def _icann_suffixes():  # type: ignore[no-untyped-def]
    """The Public Suffix List's ICANN section, shipped inside the package (no network).
    Loaded on first use (~60 ms): only policies with suffix grants pay for it."""
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList(only_icann=True)


def is_public_suffix(domain: str) -> bool:
    """Whether names are registered directly under `domain` (com, co.uk, any unlisted
    top-level label): a suffix grant over it would match strangers' domains."""
    return bool(_icann_suffixes().is_public(domain))


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def normalise_host(host: str) -> str:
    """The one spelling names are matched in (see the module docstring)."""
    name = host.removesuffix(".")
    if name.endswith("."):  # idna keeps one trailing dot: `a.b..` would stay `a.b.`
        raise GrantError(f"{host!r} is not a valid host name (IDNA: Empty Label)")
    ip = _ip(name)
    if ip is not None:
        return str(ip)
    try:
        return idna.encode(name, uts46=True).decode("ascii")
    except UnicodeError as error:  # idna.IDNAError is one
        raise GrantError(f"{host!r} is not a valid host name (IDNA: {error})") from None


@dataclass(frozen=True)
class Grant:
    host: str  # lower case, no trailing dot; for a suffix grant, the domain below `*.`
    port: int
    suffix: bool = False  # `*.host`: any name strictly below host

    @staticmethod
    def parse(text: str) -> Grant:
        """A `host:port` as a client asked for it (CONNECT target): split, not judged."""
        host, _, port = text.rpartition(":")
        return Grant(host.strip("[]").lower().removesuffix("."), int(port))

    @staticmethod
    def of(text: str) -> Grant:
        """A grant as a policy or workflow writes it, checked and normalised; GrantError
        says what is wrong with it."""
        host, colon, port = text.rpartition(":")
        if not colon or not host:
            raise GrantError(f"{text!r} is not HOST:PORT (or *.DOMAIN:PORT)")
        if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
            raise GrantError(f"{text!r}: port {port!r} is not a port (1-65535)")
        if host == "*":
            raise GrantError(
                f"{text!r} would grant every host: name the hosts, or a domain suffix "
                "such as *.example.com:443"
            )
        suffix = host.startswith(SUFFIX_MARK)
        domain = host.removeprefix(SUFFIX_MARK)
        if "*" in domain:
            raise GrantError(f"{text!r}: `*` may only be the whole first label (*.example.com)")
        if domain.startswith("[") and domain.endswith("]"):  # IPv6, as in URLs
            ip = _ip(domain[1:-1])
            if suffix or not isinstance(ip, ipaddress.IPv6Address):
                raise GrantError(f"{text!r}: [...] holds one IPv6 address, never a wildcard")
            return Grant(str(ip), int(port))
        if suffix and (_ip(domain) is not None or domain.rpartition(".")[2].isdigit()):
            raise GrantError(f"{text!r}: a wildcard cannot apply to an IP address")
        if any(c in domain for c in ":/[]") or any(c.isspace() for c in domain):
            raise GrantError(f"{text!r} is not HOST:PORT (or *.DOMAIN:PORT; IPv6: [ADDRESS]:PORT)")
        name = normalise_host(domain)
        if suffix and is_public_suffix(name):
            raise GrantError(
                f"{text!r} would match every domain registered under the public suffix "
                f"{name}: grant hosts, or a suffix of a domain you own"
            )
        return Grant(name, int(port), suffix)

    def normalised(self) -> Grant:
        """A target (never a suffix) in the spelling grants are matched in (GrantError if
        it has none)."""
        return Grant(normalise_host(self.host), self.port)

    @property
    def is_ip_literal(self) -> bool:
        return _ip(self.host) is not None

    def matches(self, target: Grant) -> bool:
        """Whether this grant lets a client reach `target` (a normalised name, no suffix).
        A suffix's last label is never numeric (`of`), so no IP literal ends in `.host`."""
        if self.port != target.port:
            return False
        if self.suffix:
            return target.host.endswith("." + self.host)
        return self.host == target.host

    def covers(self, other: Grant) -> bool:
        """Whether this grant includes all of `other` (admission: node within policy):
        an exact host under a suffix; a suffix only under an equal or wider suffix."""
        if not other.suffix:
            return self.matches(other)
        return (
            self.suffix
            and self.port == other.port
            and (other.host == self.host or other.host.endswith("." + self.host))
        )

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{SUFFIX_MARK if self.suffix else ''}{host}:{self.port}"


def uncovered(requested: Iterable[str], granted: Iterable[str]) -> list[str]:
    """The requested grants (as written) that no granted one covers; one that is not a
    valid grant is never covered. Both sides as written in validated files."""
    grants = [Grant.of(g) for g in granted]
    out = []
    for entry in requested:
        try:
            wanted = Grant.of(entry)
        except GrantError:
            out.append(entry)
            continue
        if not any(g.covers(wanted) for g in grants):
            out.append(entry)
    return out


async def system_resolver(host: str, port: int) -> list[str]:
    import asyncio  # here: checking a workflow needs grants, not the event loop

    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def routable(address: str) -> bool:
    """Globally routable: not private, loopback, link-local (metadata), reserved, ..."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def private_allowed(address: str) -> bool:
    """What a name the policy opts in (`network.private_names`) may also resolve to: a
    private network (10/8, 172.16/12, 192.168/16, fc00::/7) or loopback; never
    link-local (the cloud metadata service), unspecified, multicast or reserved."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return True
    return ip.is_private and not (
        ip.is_link_local or ip.is_unspecified or ip.is_multicast or ip.is_reserved
    )


def grant_problem(text: str) -> str | None:
    """Why `text` is not a valid grant, or None."""
    try:
        Grant.of(text)
    except GrantError as error:
        return str(error)
    return None


def private_name_problem(entry: str, egress: Iterable[str]) -> str | None:
    """Why a `network.private_names` entry is refused: it must be one exact host name
    (never a suffix, never an IP literal, taken as meant anyway) that `egress` grants."""
    try:
        grant = Grant.of(entry)
    except GrantError as error:
        return str(error)
    if grant.suffix:
        return f"{entry!r}: a private name is one exact host, never a suffix"
    if grant.is_ip_literal:
        return f"{entry!r}: an IP literal grant is taken as meant; no opt-in is needed"
    if uncovered([entry], egress):
        return f"{entry!r} is not granted by network.egress"
    return None
