"""The run's proxy on this host: a Unix socket per node with egress (egress/__init__.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from ..errors import InfrastructureError
from ..store import private_dir
from .broker import Brokered
from .core import Proxy, Unreachable
from .grants import Resolver, routable, system_resolver

SOCKET_NAME = "proxy.sock"
CONTAINER_DIR = "/run/egress"


class EgressProxy(Proxy):
    """The run's proxy: `open()` a socket per node with egress, `close()` at the end."""

    def __init__(
        self,
        run_id: str,
        resolver: Resolver = system_resolver,
        allowed_address: Callable[[str], bool] = routable,
        on_unreachable: Unreachable | None = None,
        private_names: Iterable[str] = (),
    ) -> None:
        super().__init__(resolver, allowed_address, on_unreachable, private_names)
        # Private (0700), in a directory no policy can mount (mounts.never_mountable): only
        # a node's own bind mount exposes its socket, never another node's or run's.
        try:
            parent = private_dir("egress")
            self.root = Path(tempfile.mkdtemp(prefix=f"{run_id}-", dir=parent))
        except OSError as error:
            raise InfrastructureError(f"cannot make the egress socket directory: {error}") from None
        self._servers: dict[str, asyncio.base_events.Server] = {}

    async def open(
        self,
        node: str,
        grants: list[str],
        brokered: Sequence[Brokered] = (),
        setup: Sequence[str] | None = None,
    ) -> Path:
        """Start listening for `node`; returns the directory to mount at /run/egress.
        A node with only brokered secrets (no grants) gets its socket too. With `setup`
        (its setup grants), each attempt starts in phase setup (phases.py)."""
        egress = self.add(node, grants, brokered, setup)
        directory = self.root / node
        if node in self._servers:  # a retry: same socket
            return directory
        directory.mkdir(mode=0o755)
        path = directory / SOCKET_NAME
        # The path as a Path, never as text: nothing but this directory can be bound.
        self._servers[node] = await asyncio.start_unix_server(
            lambda r, w: self.accept(egress, r, w), path=path
        )
        os.chmod(path, 0o666)  # the node runs as uid 10001
        return directory

    async def settle(self, node: str) -> None:
        """Nothing to fetch: this process is the proxy."""

    async def close(self) -> list[str]:
        for server in self._servers.values():
            server.close()
        await self.stop()
        for node in self._servers:
            with contextlib.suppress(OSError):
                (self.root / node / SOCKET_NAME).unlink()
                (self.root / node).rmdir()
        with contextlib.suppress(OSError):
            self.root.rmdir()
        return []  # a socket left behind is in a private directory of this user's
