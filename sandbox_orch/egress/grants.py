"""What a node may reach: `host:port` grants, and the addresses a name may resolve to."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Resolver = Callable[[str, int], Awaitable[list[str]]]


@dataclass(frozen=True)
class Grant:
    host: str  # lower case, no trailing dot
    port: int

    @staticmethod
    def parse(text: str) -> Grant:
        host, _, port = text.rpartition(":")
        return Grant(host.strip("[]").lower().rstrip("."), int(port))

    @property
    def is_ip_literal(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


async def system_resolver(host: str, port: int) -> list[str]:
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
