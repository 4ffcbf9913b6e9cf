"""What the proxy does with a node's connection, whichever way it arrived: the node's
allowlist, its setup phase, its brokered secrets, its refusals (egress/__init__.py).

How connections arrive is the listener's: a Unix socket per node on this host
(proxy.py), or one TLS port in a proxy pod where the client certificate says which node
(remote.py). Both hand each connection to `Proxy.accept` with the node it belongs to.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import h11

from .broker import Brokered, addressed, forward, route, tls_context, why_tls
from .grants import Grant, GrantError, Resolver, private_allowed, routable, system_resolver
from .http import Refused, read_head, reply, server_connection, splice, target_of
from .phases import SetupPhase, flip_exit_code, is_phase_request

CONNECT_TIMEOUT = 10.0
HEAD_TIMEOUT = 30.0

MAX_REPORTED = 20  # distinct unreachable reports per node: bounded whatever the node asks

Unreachable = Callable[[str, str, str], None]  # (node, "host:port", why)


@dataclass
class Violation:
    kind: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "detail": self.detail}


class NotResolved(Refused):
    """A granted name that does not resolve: refused, and reported as unreachable."""

    def __init__(self, grant: Grant, error: OSError) -> None:
        super().__init__(502, f"{grant.host} does not resolve: {error}")
        self.grant = grant
        self.why = f"{grant.host} does not resolve ({error.strerror or error})"


def why_unreachable(error: BaseException) -> str:
    """A failed connection in a few words: `connection refused`, not `[Errno 111] ...`."""
    if isinstance(error, TimeoutError):
        return f"no answer in {CONNECT_TIMEOUT:g}s"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror[:200].lower()
    return str(error)[:200] or type(error).__name__


class RunEgress(Protocol):
    """What the runner uses of a run's egress proxy, wherever it runs (proxy.py on this
    host, backend/kubernetes/egress.py in a pod)."""

    on_unreachable: Unreachable | None

    @property
    def nodes(self) -> Mapping[str, object]: ...

    async def open(
        self,
        node: str,
        grants: list[str],
        brokered: Sequence[Brokered] = (),
        setup: Sequence[str] | None = None,
    ) -> Path | None:
        """Ready for the node's attempt: a directory to mount at /run/egress, or None when
        the backend gives the node its way to the proxy itself."""

    async def settle(self, node: str) -> None:
        """The node's violations and setup phase are read next: bring them up to date."""

    def violations(self, node: str) -> list[dict[str, str]]: ...

    def setup_phase(self, node: str) -> SetupPhase | None: ...

    async def close(self) -> list[str]:
        """Stop; returns what it could not remove (left for `gc`)."""


@dataclass
class NodeEgress:
    """One node's allowlist, setup phase, brokered secrets and refusals."""

    node: str
    grants: frozenset[Grant]
    violations: list[Violation] = field(default_factory=list)
    connections: set[asyncio.Task[None]] = field(default_factory=set)
    reported: set[tuple[str, str]] = field(default_factory=set)  # unreachable (target, why)
    brokered: tuple[Brokered, ...] = ()  # secrets injected into requests to their upstream
    setup: SetupPhase | None = None  # this attempt's setup phase, if the node has one

    @property
    def in_setup(self) -> bool:
        return self.setup is not None and not self.setup.ended

    @property
    def active_grants(self) -> frozenset[Grant]:
        """Setup's grants until the flip, the node's own after it."""
        return self.setup.grants if self.setup is not None and self.in_setup else self.grants


class Proxy:
    """Nodes' allowlists and the handling of their connections; `add` a node, `accept`
    each of its connections, `stop` at the end."""

    def __init__(
        self,
        resolver: Resolver = system_resolver,
        allowed_address: Callable[[str], bool] = routable,
        on_unreachable: Unreachable | None = None,
        private_names: Iterable[str] = (),
    ) -> None:
        self._resolve = resolver
        self._allowed_address = allowed_address
        # The policy's opt-in: these exact names may resolve to private addresses too.
        self._private_names = frozenset(Grant.of(name) for name in private_names)
        self.on_unreachable = on_unreachable  # the run reports it as an event
        self.nodes: dict[str, NodeEgress] = {}

    def add(
        self,
        node: str,
        grants: Sequence[str],
        brokered: Sequence[Brokered] = (),
        setup: Sequence[str] | None = None,
    ) -> NodeEgress:
        """The node's allowlist. Again for a node already added (a retry): its attempt
        gets a setup phase of its own, the rest is kept. With `setup` (its setup grants),
        each attempt starts in phase setup (phases.py)."""
        egress = self.nodes.get(node)
        if egress is None:
            egress = NodeEgress(node, frozenset(Grant.of(g) for g in grants))
            egress.brokered = tuple(brokered)
            self.nodes[node] = egress
        egress.setup = self._setup(egress, setup)
        return egress

    def violations(self, node: str) -> list[dict[str, str]]:
        egress = self.nodes.get(node)
        return [v.as_dict() for v in egress.violations] if egress else []

    @staticmethod
    def _setup(egress: NodeEgress, grants: Sequence[str] | None) -> SetupPhase | None:
        if grants is None:
            return None
        return SetupPhase(frozenset(Grant.of(g) for g in grants), len(egress.violations))

    def setup_phase(self, node: str) -> SetupPhase | None:
        """The node's setup phase as it stands (its attempt ended): the violations of
        a setup that never flipped are moved into it, never left as the command's."""
        egress = self.nodes.get(node)
        if egress is None or egress.setup is None:
            return None
        if not egress.setup.ended:
            self._split_violations(egress, egress.setup)
        return egress.setup

    @staticmethod
    def _split_violations(egress: NodeEgress, setup: SetupPhase) -> None:
        setup.violations += [v.as_dict() for v in egress.violations[setup.mark :]]
        del egress.violations[setup.mark :]

    async def stop(self) -> None:
        """End every connection still open (a stopped node's held answer)."""
        for egress in self.nodes.values():
            for task in egress.connections:
                task.cancel()
            await asyncio.gather(*egress.connections, return_exceptions=True)

    async def accept(
        self, egress: NodeEgress, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        egress.connections.add(task)
        try:
            await self._serve(egress, reader, writer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # close() cancels what is still open (a stopped node's held answer): the
            # connection ends here. Re-raised, asyncio 3.11's stream callback would log
            # the cancelled handler as an error, a traceback on the user's terminal.
            pass
        finally:
            egress.connections.discard(task)
            writer.close()

    async def _serve(
        self, egress: NodeEgress, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        connection = server_connection()
        try:
            async with asyncio.timeout(HEAD_TIMEOUT):
                request = await read_head(reader, connection)
            if is_phase_request(request):  # for the proxy itself: setup ended
                await self._flip(egress, request, writer)
                return
            if addressed(request) is not None:  # for the broker, not a granted target
                await self._broker(egress, connection, request, reader, writer)
                return
            target, forward = target_of(request)
            grant = self._check_grant(egress, target)
            address = await self._check_address(grant)
        except Refused as refused:
            await self._refuse(egress, refused, "egress", writer)
            return
        streams = await self._connect(egress, grant, address, writer)
        if streams is None:
            return
        up_reader, up_writer = streams
        if forward is None:  # CONNECT: the node speaks TLS end to end from here
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        else:
            up_writer.write(forward)
        up_writer.write(bytes(connection.trailing_data[0]))
        await splice(reader, writer, up_reader, up_writer)

    async def _connect(
        self,
        egress: NodeEgress,
        grant: Grant,
        address: str,
        writer: asyncio.StreamWriter,
        tls: ssl.SSLContext | None = None,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """Connect to the checked address (TLS verified against `grant.host` if `tls`);
        None once a failure is reported and answered."""
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                return await asyncio.open_connection(
                    address,
                    grant.port,
                    **({"ssl": tls, "server_hostname": grant.host} if tls else {}),
                )
        except (OSError, TimeoutError) as error:  # ssl.SSLError is an OSError
            why = why_tls(error) or why_unreachable(error)
        self._unreachable(egress, grant, why)
        await reply(writer, 502, f"cannot connect to {grant.host}:{grant.port}: {why}")
        return None

    async def _broker(
        self,
        egress: NodeEgress,
        connection: h11.Connection,
        request: h11.Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """A request for a brokered upstream: checked, its credential swapped, sent over
        verified TLS (broker.py). Refusals are violations of kind `broker`."""
        try:
            if egress.in_setup:
                raise Refused(403, "the broker is closed until setup ends")
            routed = route(egress.node, egress.brokered, request)
            address = await self._check_address(routed.target)
        except Refused as refused:
            await self._refuse(egress, refused, "broker", writer)
            return
        try:
            tls = tls_context(routed.entries[0].ca_bundle)
        except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
            why = f"cannot load the CA bundle: {why_unreachable(error)}"
            self._unreachable(egress, routed.target, why)
            target = f"{routed.target.host}:{routed.target.port}"
            await reply(writer, 502, f"cannot connect to {target}: {why}")
            return
        streams = await self._connect(egress, routed.target, address, writer, tls)
        if streams is None:
            return
        try:
            await forward(connection, reader, writer, *streams, routed)
        except Refused as refused:  # the upstream's answer was not HTTP
            await reply(writer, refused.status, str(refused))

    async def _flip(
        self, egress: NodeEgress, request: h11.Request, writer: asyncio.StreamWriter
    ) -> None:
        """Setup ended: its grants go for good, and with them every open connection."""
        try:
            exit_code = flip_exit_code(request)
            if egress.setup is None:
                raise Refused(403, f"node {egress.node!r} has no setup phase")
            if egress.setup.ended:
                egress.setup.flipped_again = True
                raise Refused(403, "the setup phase has already ended")
        except Refused as refused:
            egress.violations.append(Violation("phase", str(refused)))
            await reply(writer, refused.status, str(refused))
            return
        setup = egress.setup
        setup.end(exit_code)
        self._split_violations(egress, setup)
        current = asyncio.current_task()
        for task in list(egress.connections):
            if task is not current:
                task.cancel()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        await writer.drain()

    async def _refuse(
        self, egress: NodeEgress, refused: Refused, kind: str, writer: asyncio.StreamWriter
    ) -> None:
        """Answer a refusal. A granted name that does not resolve is a network failure,
        reported as unreachable; anything else is a violation of `kind`."""
        if isinstance(refused, NotResolved):
            self._unreachable(egress, refused.grant, refused.why)
        else:
            egress.violations.append(Violation(kind, str(refused)))
        await reply(writer, refused.status, str(refused))

    def _unreachable(self, egress: NodeEgress, target: Grant, why: str) -> None:
        """Report a granted target that cannot be reached, once per target and reason."""
        key = (f"{target.host}:{target.port}", why)
        if self.on_unreachable is None or key in egress.reported:
            return
        if len(egress.reported) >= MAX_REPORTED:
            return
        egress.reported.add(key)
        self.on_unreachable(egress.node, *key)

    def _check_grant(self, egress: NodeEgress, target: Grant) -> Grant:
        """Matched on the name the client asked for, before any resolution."""
        try:
            target = target.normalised()
        except GrantError as error:
            raise Refused(400, f"refused: {error}") from None
        grants = egress.active_grants
        if not any(grant.matches(target) for grant in grants):
            apex = Grant(target.host, target.port, suffix=True) in grants
            note = f" (*.{target.host} matches names below it only)" if apex else ""
            phase = " during setup" if egress.in_setup else ""
            raise Refused(
                403,
                f"{target.host}:{target.port} is not granted to node {egress.node!r}{phase}{note}",
            )
        return target

    async def _check_address(self, grant: Grant) -> str:
        if grant.is_ip_literal:
            return grant.host  # an IP literal grant is taken as meant (CONTRACT 4)
        try:
            addresses = await self._resolve(grant.host, grant.port)
        except OSError as error:
            raise NotResolved(grant, error) from None
        opted_in = grant in self._private_names  # network.private_names: one exact name
        allowed = private_allowed if opted_in else self._allowed_address
        bad = [a for a in addresses if not (self._allowed_address(a) or allowed(a))]
        if bad or not addresses:
            why = (
                "an address network.private_names does not open"
                if opted_in
                else "a non-public address"
            )
            raise Refused(403, f"{grant.host} resolves to {why} ({', '.join(bad)}): refused")
        return addresses[0]
