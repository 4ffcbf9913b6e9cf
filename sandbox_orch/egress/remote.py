"""The run's proxy in a pod of its own (the Kubernetes backend): one TLS port for every
node, each told apart by its client certificate, driven by the run's host over its
stdin and stdout.

    python3 -m sandbox_orch.egress.remote --port 3128 [--host ADDRESS]

The host starts this over the exec API (backend/kubernetes/egress.py), so it lives as
long as that connection: end of input (the host closed it, or died) stops it, and with
it every node's way out. Fail closed: nothing but the host's word opens anything.

A connection is served only after a TLS handshake whose client certificate the run's CA
signed and whose SHA-256 fingerprint the host registered for a node (identity.py); that
node's allowlist, setup phase and brokered secrets then apply (core.py), as to a
connection on its own Unix socket on Docker. Anything else is closed unanswered.

The control stream is one JSON object per line (replies carry the request's `id`):

    {"op": "start", "ca": PEM, "cert": PEM, "key": PEM, "private_names": [...]}
        -> {"ok": true, "port": 3128, "addresses": ["0.0.0.0", "::"]}   (listening)
    {"op": "open", "id": 1, "node": "fetch", "fingerprint": HEX, "grants": [...],
     "brokered": [{...Brokered's fields, "ca_bundle": PEM or null}], "setup": [...] | null}
        -> {"id": 1, "ok": true}
    {"op": "state", "id": 2, "node": "fetch"}
        -> {"id": 2, "ok": true, "violations": [...], "setup": {...} | null}
    {"op": "ping", "id": 3}  -> {"id": 3, "ok": true}       (keeps the connection busy)
    events: {"event": "unreachable", "node": ..., "target": "host:port", "why": ...}
    a refusal: {"id": N, "ok": false, "error": "..."}

Secrets arrive only on stdin and stay in this process: never in a reply, an event,
stderr, or a file but the CA bundles (public certificates).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .broker import Brokered
from .core import NodeEgress, Proxy
from .phases import SetupPhase

HANDSHAKE_TIMEOUT = 10.0  # seconds for a client's TLS handshake
LINE_LIMIT = 1 << 20  # bytes of one control line (a node's grants and brokered entries)
Send = Callable[[dict[str, Any]], None]


class ControlError(Exception):
    """A control request that cannot be done: its reply says why."""


class RemoteProxy(Proxy):
    """Nodes by fingerprint, one TLS listener, and what the control stream asks."""

    server: asyncio.base_events.Server  # from `listen` on (a proxy is used once it listens)

    def __init__(self, send: Send, workdir: Path, private_names: list[str]) -> None:
        super().__init__(on_unreachable=self._report, private_names=private_names)
        self._send = send
        self._workdir = workdir  # CA bundles of brokered upstreams (private, in memory)
        self.by_fingerprint: dict[str, NodeEgress] = {}
        self.refused = 0  # connections closed unanswered: no known certificate

    def _report(self, node: str, target: str, why: str) -> None:
        self._send({"event": "unreachable", "node": node, "target": target, "why": why})

    async def listen(self, host: str | None, port: int, ca: str, cert: str, key: str) -> int:
        context = server_context(ca, cert, key, self._workdir)
        self.server = await asyncio.start_server(
            self._connected,
            host=host,
            port=port,
            ssl=context,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
        )
        return int(self.server.sockets[0].getsockname()[1])

    def open(self, request: dict[str, Any]) -> None:
        node, fingerprint = str(request["node"]), str(request["fingerprint"])
        known = self.by_fingerprint.get(fingerprint)
        if known is not None and known.node != node:
            raise ControlError("that certificate is another node's")
        brokered = [self._brokered(entry) for entry in request.get("brokered") or ()]
        setup = request.get("setup")
        egress = self.add(node, list(request.get("grants") or ()), brokered, setup)
        self.by_fingerprint[fingerprint] = egress

    def _brokered(self, entry: dict[str, Any]) -> Brokered:
        fields = dict(entry)
        bundle = fields.pop("ca_bundle", None)  # its text: a file of this pod's instead
        for key in ("paths", "methods"):
            if key in fields:
                fields[key] = tuple(fields[key])
        if bundle is not None:
            fd, path = tempfile.mkstemp(dir=self._workdir)
            with os.fdopen(fd, "w") as file:
                file.write(bundle)
            fields["ca_bundle"] = path
        try:
            return Brokered(**fields)
        except (TypeError, ValueError) as error:  # its messages never quote a value
            raise ControlError(f"brokered entry: {error}") from None

    def state(self, node: str) -> dict[str, Any]:
        setup = self.setup_phase(node)
        return {"violations": self.violations(node), "setup": phase_json(setup)}

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # CERT_REQUIRED: a connection gets here only with a certificate the run's CA signed.
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        egress = self.by_fingerprint.get(hashlib.sha256(der).hexdigest())
        if egress is None:  # but no node's (or not yet)
            self.refused += 1
            writer.close()
            return
        await self.accept(egress, reader, writer)

    async def close(self) -> None:
        self.server.close()
        await self.stop()


def server_context(ca: str, cert: str, key: str, workdir: Path) -> ssl.SSLContext:
    """TLS 1.2 or later; a client certificate the run's CA signed is required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    # load_cert_chain reads files only: the key is written, loaded and removed at once.
    fd, path = tempfile.mkstemp(dir=workdir)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(cert + key)
        context.load_cert_chain(path)
    finally:
        os.unlink(path)
    return context


def phase_json(setup: SetupPhase | None) -> dict[str, Any] | None:
    """A setup phase as the host rebuilds it: its end as seconds ago, not this
    machine's monotonic clock."""
    if setup is None:
        return None
    ago = None if setup.ended_at is None else max(0.0, time.monotonic() - setup.ended_at)
    return {
        "ended": setup.ended,
        "exit_code": setup.exit_code,
        "ended_ago": ago,
        "violations": list(setup.violations),
        "flipped_again": setup.flipped_again,
    }


class Control:
    """The control stream's side of the pod: `start` first, then requests, each answered."""

    def __init__(self, port: int, send: Send, workdir: Path, host: str | None = None) -> None:
        self.port, self.send, self.workdir = port, send, workdir
        self.host = host  # None: every address the pod has (IPv4 and IPv6 alike)
        self.proxy: RemoteProxy | None = None

    async def serve(self, lines: asyncio.StreamReader) -> None:
        """Until the stream ends; then the proxy stops."""
        try:
            while line := await lines.readline():
                try:
                    request = json.loads(line)
                except ValueError:
                    self.send({"ok": False, "error": "not a JSON line"})
                    continue
                if not isinstance(request, dict):
                    self.send({"ok": False, "error": "not a JSON object"})
                    continue
                await self._answer(request)
        finally:
            if self.proxy is not None:
                await self.proxy.close()

    async def _answer(self, request: dict[str, Any]) -> None:
        op, reply = request.get("op"), {"id": request.get("id")}
        try:
            reply.update(await self._do(op, request))
        except (ControlError, KeyError, OSError, ValueError) as error:
            # KeyError: a field missing; OSError: the port taken; ssl.SSLError, ValueError:
            # a PEM that does not load. The message names the field or the problem, no value.
            why = f"missing {error}" if isinstance(error, KeyError) else str(error)
            self.send({**reply, "ok": False, "error": why[:300]})
            return
        self.send({**reply, "ok": True})

    async def _do(self, op: object, request: dict[str, Any]) -> dict[str, Any]:
        if op == "start":
            if self.proxy is not None:
                raise ControlError("already started")
            names = list(request.get("private_names") or ())
            ca, cert, key = request["ca"], request["cert"], request["key"]
            proxy = RemoteProxy(self.send, self.workdir, names)
            port = await proxy.listen(self.host, self.port, ca, cert, key)
            self.proxy = proxy  # only once it listens: a failed start can be asked again
            where = sorted({str(s.getsockname()[0]) for s in proxy.server.sockets})
            return {"port": port, "addresses": where}
        if op == "ping":  # the host's keepalive: an idle exec connection is cut
            return {}
        if self.proxy is None:
            raise ControlError("not started")
        if op == "open":
            self.proxy.open(request)
            return {}
        if op == "state":
            return self.proxy.state(str(request["node"]))
        raise ControlError(f"unknown op {str(op)[:40]!r}")


def _writer() -> Send:
    out = sys.stdout.buffer

    def send(message: dict[str, Any]) -> None:
        out.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        out.flush()

    return send


async def _main(host: str | None, port: int) -> None:
    loop = asyncio.get_running_loop()
    lines = asyncio.StreamReader(limit=LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(lines), sys.stdin)
    with tempfile.TemporaryDirectory() as workdir:  # the pod's /tmp: in memory
        await Control(port, _writer(), Path(workdir), host).serve(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m sandbox_orch.egress.remote")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", help="one address to listen on (default: all)")
    args = parser.parse_args(argv)
    asyncio.run(_main(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
