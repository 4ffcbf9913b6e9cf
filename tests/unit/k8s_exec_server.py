"""An *emulated* exec endpoint: the API server's websocket exec protocol on loopback.

kmock (k8s_emulator.py) has no websockets, so this is an aiohttp server of our own for
`GET /api/v1/namespaces/NS/pods/POD/exec`, speaking the protocol as the API server does:
the query's repeated `command` and its stdin/stdout/stderr/tty flags; the subprotocol
chosen as the first of the client's that it offers (v5.channel.k8s.io and/or
v4.channel.k8s.io); an empty message on the lowest output channel once open; binary
messages whose first byte is the channel; stdin closed by a v5 message on channel 255
(ignored on v4, as the server ignores an unknown channel); the end as a metav1.Status on
channel 3, marshalled as the kubelet does (Success; Failure/NonZeroExitCode with an
ExitCode cause; Failure/InternalError when the command could not run), then the close.

It runs each command as a real local subprocess in a scratch directory, so the commands
and the bytes are real; the pod, its container and its isolation are not. `paths` stands
in for the pod's file system: an argument under one of its in-pod prefixes is rewritten
to the local directory given for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from kubernetes.aio import client as k8s
from kubernetes.aio.stream import WsApiClient

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
CHUNK = 32 * 1024  # the kubelet's copy buffer
BOOLEANS = {"1": True, "t": True, "true": True, "0": False, "f": False, "false": False}


def success() -> dict[str, Any]:
    return {"metadata": {}, "status": "Success"}


def non_zero(argv: list[str], code: int) -> dict[str, Any]:
    return {
        "metadata": {},
        "status": "Failure",
        "message": "command terminated with non-zero exit code: error executing command "
        f"[{' '.join(argv)}], exit code {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def internal_error(why: str) -> dict[str, Any]:
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"Internal error occurred: {why}",
        "reason": "InternalError",
        "details": {"causes": [{"message": why}]},
        "code": 500,
    }


def refusal(code: int, reason: str, message: str) -> web.Response:
    """An answer before the upgrade, as the API server's: a Status with an HTTP code."""
    status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
              "message": message, "reason": reason, "code": code}  # fmt: skip
    return web.json_response(status, status=code)


@dataclass
class Exchange:
    """What one exec asked for and how it went."""

    namespace: str
    pod: str
    container: str | None
    command: list[str]
    flags: dict[str, bool]
    protocol: str = ""
    sent: int = 0  # bytes of stdout sent
    ended: str = ""  # "status", "client closed", "dropped"
    returncode: int | None = None
    local: list[str] = field(default_factory=list)  # the command as run here (see `paths`)


@dataclass
class ExecServer:
    workdir: Path
    protocols: tuple[str, ...] = (V5, V4)
    pods: tuple[str, ...] | None = None  # others are 404 (None: any pod)
    drop_after: int | None = None  # bytes of stdout after which the connection is cut
    drop_cleanly: bool = False  # cut with a websocket close (else the TCP connection)
    env: dict[str, str] | None = None  # the commands' environment (e.g. a PATH)
    paths: dict[str, Path] = field(default_factory=dict)  # in-pod prefix -> local directory
    alive: Callable[[str], bool] | None = None  # whether a pod exists now (else 404)
    exchanges: list[Exchange] = field(default_factory=list)
    client_closed: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    # --- the endpoint ----------------------------------------------------------------

    async def _exec(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        flags = {}
        for name in ("stdin", "stdout", "stderr", "tty"):
            value = query.get(name, "false").lower()
            if value not in BOOLEANS:
                return refusal(400, "BadRequest", f"{name}: not a boolean: {value}")
            flags[name] = BOOLEANS[value]
        command = query.getall("command", [])
        if not command:
            return refusal(400, "BadRequest", "you must specify at least one command")
        if not (flags["stdin"] or flags["stdout"] or flags["stderr"]):
            return refusal(
                400, "BadRequest", "you must specify at least 1 of stdin, stdout, stderr"
            )
        pod = request.match_info["pod"]
        gone = self.alive is not None and not self.alive(pod)
        if gone or (self.pods is not None and pod not in self.pods):
            return refusal(404, "NotFound", f'pods "{pod}" not found')
        asked = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        chosen = next((p for p in asked if p in self.protocols), None)
        if chosen is None:
            return refusal(400, "BadRequest", f"requested protocol(s) are not supported: {asked}")
        exchange = Exchange(
            request.match_info["namespace"], pod, query.get("container"), command, flags, chosen
        )
        exchange.local = [self._local(argument) for argument in command]
        self.exchanges.append(exchange)
        ws = web.WebSocketResponse(protocols=(chosen,))
        await ws.prepare(request)
        await _Session(self, request, ws, exchange).run()
        return ws

    def _local(self, argument: str) -> str:
        for prefix, directory in self.paths.items():
            if argument == prefix or argument.startswith(prefix + "/"):
                return str(directory) + argument[len(prefix) :]
        return argument

    # --- serving ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[ExecServer]:
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/{namespace}/pods/{pod}/exec", self._exec)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        try:
            yield self
        finally:
            await runner.cleanup()

    def ws_api(self) -> WsApiClient:
        return WsApiClient(k8s.Configuration(host=self.url))


class _Session:
    """One exec: the command as a subprocess, its streams on their channels."""

    def __init__(
        self, server: ExecServer, request: web.Request, ws: web.WebSocketResponse, ex: Exchange
    ) -> None:
        self.server = server
        self.request = request
        self.ws = ws
        self.exchange = ex
        self.lock = asyncio.Lock()  # one message at a time on the socket
        self.process: asyncio.subprocess.Process | None = None

    async def send(self, channel: int, data: bytes) -> None:
        async with self.lock:
            await self.ws.send_bytes(bytes([channel]) + data)

    async def run(self) -> None:
        flags, ex = self.exchange.flags, self.exchange
        # As the API server: an empty message on the lowest output channel says "open".
        await self.send(1 if flags["stdout"] else 2 if flags["stderr"] else 3, b"")
        pipe, devnull = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
        try:
            self.process = await asyncio.create_subprocess_exec(
                *ex.local, cwd=self.server.workdir, env=self.server.env,
                stdin=pipe if flags["stdin"] else devnull,
                stdout=pipe if flags["stdout"] else devnull,
                stderr=pipe if flags["stderr"] else devnull,
                start_new_session=True,  # its own group: `kill` reaches its children too
            )  # fmt: skip
        except OSError as error:
            why = f"error executing command in container: failed to exec in container: {error}"
            await self.finish(internal_error(why))
            return
        listening = asyncio.ensure_future(self.listen())
        try:
            await asyncio.gather(
                self.pump(self.process.stdout, 1), self.pump(self.process.stderr, 2)
            )
            code = await self.process.wait()
            ex.returncode = code
            if ex.ended:  # dropped, or the client closed
                return
            if code >= 0:
                await self.finish(success() if code == 0 else non_zero(ex.command, code))
            else:  # killed by a signal: not an exit, the kubelet says
                await self.finish(internal_error(f"command {ex.command} killed by signal {-code}"))
        finally:
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listening
            if self.process.returncode is None:
                self.kill()
                ex.returncode = await self.process.wait()

    async def pump(self, stream: asyncio.StreamReader | None, channel: int) -> None:
        """A stream onto its channel, until the process closes it."""
        if stream is None:
            return
        while chunk := await stream.read(CHUNK):
            if self.exchange.ended:
                continue  # the connection is gone: read through to the process's end
            with contextlib.suppress(ConnectionError):
                await self.send(channel, chunk)
            if channel == 1:
                self.exchange.sent += len(chunk)
                drop = self.server.drop_after
                if drop is not None and self.exchange.sent >= drop:
                    await self.drop()

    async def drop(self) -> None:
        self.exchange.ended = "dropped"
        if self.server.drop_cleanly:
            await self.ws.close()
        else:
            assert self.request.transport is not None
            self.request.transport.close()
        self.kill()

    def kill(self) -> None:
        """The command and what it started (`sh -c "cat; ..."`: cat too)."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    async def listen(self) -> None:
        """The client's messages: stdin, its close (v5), or the end of the connection."""
        assert self.process is not None
        async for message in self.ws:
            if message.type is not WSMsgType.BINARY or not message.data:
                continue
            channel, data = message.data[0], message.data[1:]
            stdin = self.process.stdin
            if channel == 0 and stdin is not None:
                with contextlib.suppress(ConnectionError):
                    stdin.write(data)
                    await stdin.drain()
            elif channel == 255 and self.exchange.protocol == V5 and data == b"\x00" and stdin:
                stdin.close()
        if not self.exchange.ended:  # closed by the client before the status
            self.exchange.ended = "client closed"
            self.server.client_closed.set()
            self.kill()

    async def finish(self, status: dict[str, Any]) -> None:
        self.exchange.ended = "status"
        await self.send(3, json.dumps(status, separators=(",", ":")).encode())
        await self.ws.close()
