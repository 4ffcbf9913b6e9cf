"""The proxy pod's server (egress/remote.py), in this process and as its own process: real
TLS on loopback with certificates from a real run CA, real upstream servers. Each node is
known only by its certificate; anything else gets nothing through."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sandbox_orch.egress.identity import SERVER_NAME, Credential, RunAuthority
from sandbox_orch.egress.remote import Control, RemoteProxy

from .proxytalk import LOOPBACK_2, answer_of, echo_server

pytestmark = pytest.mark.timeout(60)


class Pod:
    """The server on a free loopback port, and its control stream as the host has it."""

    def __init__(self, tmp_path: Path, port: int = 0) -> None:
        self.authority = RunAuthority("run-1")
        self.lines = asyncio.StreamReader()
        self.sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.events: list[dict[str, Any]] = []
        self.control = Control(port, self._received, tmp_path, "127.0.0.1")
        self.task = asyncio.ensure_future(self.control.serve(self.lines))
        self.port = 0
        self._ids = 0

    def _received(self, message: dict[str, Any]) -> None:
        assert json.loads(json.dumps(message)) == message  # what goes on the wire
        if "event" in message:
            self.events.append(message)
        else:
            self.sent.put_nowait(message)

    async def ask(self, **request: Any) -> dict[str, Any]:
        self._ids += 1
        request.setdefault("id", self._ids)
        self.lines.feed_data(json.dumps(request).encode() + b"\n")
        return await asyncio.wait_for(self.sent.get(), 10)

    async def start(self, **more: Any) -> None:
        server = self.authority.server()
        reply = await self.ask(
            op="start",
            ca=self.authority.ca_pem.decode(),
            cert=server.cert_pem.decode(),
            key=server.key_pem.decode(),
            **more,
        )
        assert reply["ok"], reply
        self.port = reply["port"]

    async def open(self, node: str, grants: list[str], **more: Any) -> Credential:
        credential = self.authority.node(node)
        reply = await self.ask(
            op="open", node=node, fingerprint=credential.fingerprint, grants=grants, **more
        )
        assert reply == {"id": self._ids, "ok": True}
        return credential

    @property
    def proxy(self) -> RemoteProxy:
        assert self.control.proxy is not None
        return self.control.proxy

    async def stop(self) -> None:
        self.lines.feed_eof()
        await asyncio.wait_for(self.task, 10)


def client_context(tmp_path: Path, ca_pem: bytes, credential: Credential | None) -> ssl.SSLContext:
    """What socat in a node's pod does: the proxy verified against the run's CA and its
    name, the node's own certificate presented."""
    context = ssl.create_default_context(cadata=ca_pem.decode())
    if credential is not None:
        path = tmp_path / "node.pem"
        path.write_bytes(credential.cert_pem + credential.key_pem)
        context.load_cert_chain(path)
    return context


async def exchange(
    pod: Pod,
    tmp_path: Path,
    credential: Credential | None,
    raw: bytes,
    ca: bytes | None = None,
    until: bytes = b"",
) -> bytes:
    """Everything the proxy answers until it closes, or until `until` has come (TLS has
    no half-close to tell an echoing upstream we are done)."""
    context = client_context(tmp_path, ca or pod.authority.ca_pem, credential)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", pod.port, ssl=context, server_hostname=SERVER_NAME
    )
    writer.write(raw)
    await writer.drain()
    data = b""
    try:
        async with asyncio.timeout(10):
            while not (until and data.endswith(until)) and (chunk := await reader.read(4096)):
                data += chunk
        return data
    finally:
        writer.close()


def connect_to(server: asyncio.Server | int, then: bytes = b"ping") -> bytes:
    port = server if isinstance(server, int) else server.sockets[0].getsockname()[1]
    return f"CONNECT {LOOPBACK_2}:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode() + then


def run(scenario: Any) -> Any:
    return asyncio.run(scenario)


def test_a_node_reaches_what_it_was_granted_and_nothing_else(tmp_path):
    async def scenario() -> tuple[bytes, bytes, dict[str, Any]]:
        upstream, other = await echo_server(), await echo_server()
        pod = Pod(tmp_path)
        await pod.start()
        port = upstream.sockets[0].getsockname()[1]
        node = await pod.open("fetch", [f"{LOOPBACK_2}:{port}"])
        granted = await exchange(pod, tmp_path, node, connect_to(upstream), until=b"PING")
        refused = await exchange(pod, tmp_path, node, connect_to(other))
        state = await pod.ask(op="state", node="fetch")
        await pod.stop()
        upstream.close()
        other.close()
        return granted, refused, state

    granted, refused, state = run(scenario())
    assert granted == b"HTTP/1.1 200 Connection Established\r\n\r\nPING"
    assert answer_of(refused)[0].startswith("HTTP/1.1 403")
    assert state["ok"] and state["setup"] is None
    [violation] = state["violations"]
    assert violation["kind"] == "egress" and "not granted to node 'fetch'" in violation["detail"]


def test_a_node_cannot_use_another_nodes_grants(tmp_path):
    async def scenario() -> tuple[bytes, list[Any], list[Any]]:
        upstream = await echo_server()
        pod = Pod(tmp_path)
        await pod.start()
        port = upstream.sockets[0].getsockname()[1]
        await pod.open("granted", [f"{LOOPBACK_2}:{port}"])
        other = await pod.open("other", ["example.com:443"])
        answer = await exchange(pod, tmp_path, other, connect_to(upstream))
        mine = (await pod.ask(op="state", node="other"))["violations"]
        theirs = (await pod.ask(op="state", node="granted"))["violations"]
        await pod.stop()
        upstream.close()
        return answer, mine, theirs

    answer, mine, theirs = run(scenario())
    assert answer_of(answer)[0].startswith("HTTP/1.1 403")
    assert len(mine) == 1 and theirs == []  # counted against the node that asked


@pytest.mark.parametrize("who", ["unopened node", "no certificate", "another run's CA"])
def test_only_a_registered_certificate_gets_anything_through(tmp_path, who):
    async def scenario() -> tuple[bytes | None, bool, int]:
        upstream = await echo_server()
        pod = Pod(tmp_path)
        await pod.start()
        port = upstream.sockets[0].getsockname()[1]
        await pod.open("granted", [f"{LOOPBACK_2}:{port}"])
        ca = None
        if who == "unopened node":
            credential: Credential | None = pod.authority.node("granted")  # same name, not opened
        elif who == "no certificate":
            credential = None
        else:
            stranger = RunAuthority("run-2")
            credential = stranger.node("granted")
            ca = pod.authority.ca_pem + stranger.ca_pem  # it trusts the proxy still
        answer, failed = None, False
        for _ in range(2):  # each time, counted each time
            try:
                answer = await exchange(pod, tmp_path, credential, connect_to(upstream), ca)
            except (ssl.SSLError, ConnectionError):
                failed = True
        proxy = pod.proxy
        await pod.stop()
        upstream.close()
        return answer, failed, proxy.refused

    answer, failed, refused = run(scenario())
    # The handshake fails (with TLS 1.3 the client learns it at its first read), or, for
    # a certificate the run's CA signed for no node, the connection closes unanswered.
    assert answer in (None, b"")
    if who == "unopened node":
        assert (failed, refused) == (False, 2)
    else:  # the handshake failed: the connection never reached a node's lookup
        assert refused == 0


def test_the_proxy_verifies_as_the_name_nodes_check_and_no_other(tmp_path):
    async def scenario() -> type[BaseException]:
        pod = Pod(tmp_path)
        await pod.start()
        node = await pod.open("fetch", [])
        context = client_context(tmp_path, pod.authority.ca_pem, node)
        with pytest.raises(ssl.SSLCertVerificationError) as failed:
            await asyncio.open_connection(
                "127.0.0.1", pod.port, ssl=context, server_hostname="another-name"
            )
        await pod.stop()
        return failed.type

    assert run(scenario()) is ssl.SSLCertVerificationError


def test_a_setup_phase_ends_in_the_pod_and_its_state_comes_back(tmp_path):
    async def scenario() -> list[dict[str, Any]]:
        pod = Pod(tmp_path)
        await pod.start()
        node = await pod.open("build", ["example.com:443"], setup=["pypi.org:443"])
        before = await pod.ask(op="state", node="build")
        refused = await exchange(
            pod, tmp_path, node, b"CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        assert answer_of(refused)[0].startswith("HTTP/1.1 403")  # not during setup
        flip = b"POST /_phase/setup-ended/3 HTTP/1.1\r\nHost: x\r\ncontent-length: 0\r\n\r\n"
        assert answer_of(await exchange(pod, tmp_path, node, flip))[0] == "HTTP/1.1 200 OK"
        after = await pod.ask(op="state", node="build")
        await pod.stop()
        return [before, after]

    before, after = run(scenario())
    assert before["setup"] == {
        "ended": False, "exit_code": None, "ended_ago": None, "violations": [],
        "flipped_again": False,
    }  # fmt: skip
    setup = after["setup"]
    assert setup["ended"] and setup["exit_code"] == 3 and 0 <= setup["ended_ago"] < 1
    assert [v["detail"] for v in setup["violations"]] == [
        "example.com:443 is not granted to node 'build' during setup"
    ]
    assert after["violations"] == []  # setup's, not the command's


def test_an_unreachable_grant_is_reported_as_an_event(tmp_path):
    async def scenario() -> list[dict[str, Any]]:
        closed = await echo_server()
        port = closed.sockets[0].getsockname()[1]
        closed.close()
        await closed.wait_closed()
        pod = Pod(tmp_path)
        await pod.start()
        node = await pod.open("fetch", [f"{LOOPBACK_2}:{port}"])
        answer = await exchange(pod, tmp_path, node, connect_to(port))
        assert answer_of(answer)[0].startswith("HTTP/1.1 502")
        await pod.stop()
        return pod.events

    [event] = run(scenario())
    assert event["event"] == "unreachable" and event["node"] == "fetch"
    assert event["why"] == "connection refused" and event["target"].startswith(f"{LOOPBACK_2}:")


def test_control_requests_it_cannot_do_are_refused_and_say_why(tmp_path):
    async def scenario() -> list[dict[str, Any]]:
        pod = Pod(tmp_path)
        replies = [await pod.ask(op="open", node="n", fingerprint="f")]  # before start
        await pod.start()
        replies.append(await pod.ask(op="start", ca="", cert="", key=""))
        replies.append(await pod.ask(op="dance"))
        replies.append(await pod.ask(op="open", node="n"))  # no fingerprint
        node = await pod.open("a", [])
        replies.append(await pod.ask(op="open", node="b", fingerprint=node.fingerprint))
        secret = "sk-live-SECRET\r\nx: y"
        bad = {
            "name": "KEY", "upstream": "https://api.example.com", "header": "x-api-key",
            "scheme": "", "placeholder": "placeholder", "value": secret,
        }  # fmt: skip
        replies.append(await pod.ask(op="open", node="c", fingerprint="c", brokered=[bad]))
        pod.lines.feed_data(b"not json\n")
        replies.append(await asyncio.wait_for(pod.sent.get(), 10))
        assert (await pod.ask(op="ping"))["ok"]  # served on after it
        await pod.stop()
        return replies

    replies = run(scenario())
    assert all(reply["ok"] is False for reply in replies)
    errors = [reply["error"] for reply in replies]
    assert errors[:4] == ["not started", "already started", "unknown op 'dance'",
                          "missing 'fingerprint'"]  # fmt: skip
    assert errors[4] == "that certificate is another node's"
    assert errors[5] == "brokered entry: KEY: the value cannot be sent in a header"
    assert "SECRET" not in json.dumps(replies)
    assert errors[6] == "not a JSON line"


def test_a_brokered_secret_is_added_in_the_pod_with_its_ca_bundle(tmp_path):
    trustme = pytest.importorskip("trustme")
    seen: list[bytes] = []

    async def scenario() -> bytes:
        ca = trustme.CA()
        cert = ca.issue_cert(LOOPBACK_2)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(context)

        async def upstream_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
            seen.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            await writer.drain()
            writer.close()

        upstream = await asyncio.start_server(upstream_handler, LOOPBACK_2, 0, ssl=context)
        port = upstream.sockets[0].getsockname()[1]
        pod = Pod(tmp_path)
        await pod.start()
        entry = {
            "name": "API_KEY", "upstream": f"https://{LOOPBACK_2}:{port}", "header": "x-api-key",
            "scheme": "", "placeholder": "sandbox-placeholder", "value": "real-key",
            "paths": ["/v1/"], "methods": ["POST"],
            "ca_bundle": ca.cert_pem.bytes().decode(),
        }  # fmt: skip
        node = await pod.open("agent", [], brokered=[entry])
        request = (
            f"POST /_broker/{LOOPBACK_2}:{port}/v1/messages HTTP/1.1\r\nHost: x\r\n"
            "x-api-key: sandbox-placeholder\r\ncontent-length: 0\r\n\r\n"
        ).encode()
        answer = await exchange(pod, tmp_path, node, request)
        [held] = pod.proxy.nodes["agent"].brokered
        await pod.stop()
        upstream.close()
        return answer, held

    answer, held = run(scenario())
    # As the host's Brokered was: tuples, and its CA bundle a file of the pod's own.
    assert (held.paths, held.methods, held.value) == (("/v1/",), ("POST",), "real-key")
    assert held.ca_bundle is not None and Path(held.ca_bundle).parent == tmp_path
    assert answer_of(answer) == ("HTTP/1.1 200 OK", "ok")
    [head] = seen
    assert b"x-api-key: real-key" in head and b"placeholder" not in head


def test_the_server_as_a_process_starts_answers_and_stops_at_the_end_of_its_input(tmp_path):
    authority = RunAuthority("run-1")
    server = authority.server()
    start = {
        "op": "start",
        "ca": authority.ca_pem.decode(),
        "cert": server.cert_pem.decode(),
        "key": server.key_pem.decode(),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox_orch.egress.remote", "--port", "0", "--host", "127.0.0.1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lines = [{"op": "ping", "id": 6}, start, {"op": "state", "id": 7, "node": "none"}]
    out, err = process.communicate(
        "".join(json.dumps(line) + "\n" for line in lines).encode(), timeout=30
    )
    assert process.returncode == 0, err
    ping, started, state = (json.loads(line) for line in out.splitlines())
    assert ping == {"id": 6, "ok": True}  # answered even before start: the keepalive
    assert started["ok"] and started["port"] > 0
    assert state == {"id": 7, "ok": True, "violations": [], "setup": None}
    assert b"BEGIN" not in out + err  # no key, no certificate echoed


def test_a_stopped_proxy_listens_no_more(tmp_path):
    async def scenario() -> None:
        pod = Pod(tmp_path)
        await pod.start()
        await pod.stop()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", pod.port)

    run(scenario())


def test_a_client_that_never_finishes_its_handshake_is_dropped(tmp_path, monkeypatch):
    from sandbox_orch.egress import remote

    monkeypatch.setattr(remote, "HANDSHAKE_TIMEOUT", 0.2)

    async def scenario() -> bytes:
        pod = Pod(tmp_path)
        await pod.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", pod.port)  # no TLS
        try:
            async with asyncio.timeout(5):  # far less than the default 60 s
                return await reader.read()
        finally:
            writer.close()
            await pod.stop()

    assert run(scenario()) == b""


def test_a_start_that_fails_can_be_asked_again_and_keys_stay_in_its_directory(
    tmp_path, monkeypatch
):
    from sandbox_orch.egress import remote

    made: list[str | None] = []
    mkstemp = remote.tempfile.mkstemp

    def recorded(*args: Any, **kwargs: Any) -> tuple[int, str]:
        made.append(str(kwargs.get("dir")))
        return mkstemp(*args, **kwargs)

    monkeypatch.setattr(remote.tempfile, "mkstemp", recorded)

    async def scenario() -> list[dict[str, Any]]:
        pod = Pod(tmp_path)
        server = pod.authority.server()
        bad = await pod.ask(op="start", ca="not a certificate", cert="x", key="y")
        good = await pod.ask(
            op="start", ca=pod.authority.ca_pem.decode(), cert=server.cert_pem.decode(),
            key=server.key_pem.decode(),
        )  # fmt: skip
        await pod.stop()
        return [bad, good]

    bad, good = run(scenario())
    assert bad["ok"] is False and good["ok"] is True
    assert made and set(made) == {str(tmp_path)}
    assert list(tmp_path.iterdir()) == []  # the key was loaded and removed


def test_long_requests_are_answered_in_bounded_words(tmp_path):
    async def scenario() -> list[dict[str, Any]]:
        pod = Pod(tmp_path)
        await pod.start()
        unknown = await pod.ask(op="x" * 100)
        long_upstream = {
            "name": "K", "upstream": "http://" + "a" * 400, "header": "x-api-key",
            "scheme": "", "placeholder": "p", "value": "v",
        }  # fmt: skip
        refused = await pod.ask(op="open", node="n", fingerprint="f", brokered=[long_upstream])
        pod.lines.feed_data(b"[1, 2]\n")
        not_object = await asyncio.wait_for(pod.sent.get(), 10)
        assert (await pod.ask(op="ping"))["ok"]  # served on after it
        await pod.stop()
        return [unknown, refused, not_object]

    unknown, refused, not_object = run(scenario())
    assert unknown["error"] == f"unknown op {'x' * 40!r}"
    assert refused["ok"] is False and len(refused["error"]) == 300
    assert not_object == {"ok": False, "error": "not a JSON object"}


def test_it_listens_where_and_on_the_port_it_was_told_and_answers_pings(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], set[tuple[str, int]]]:
        pod = Pod(tmp_path, port)
        before = await pod.ask(op="ping")  # the keepalive, even before start
        await pod.start()
        after = await pod.ask(op="ping")
        bound = {s.getsockname()[:2] for s in pod.proxy.server.sockets}
        await pod.stop()
        return before, after, bound

    before, after, bound = run(scenario())
    assert before == {"id": 1, "ok": True} and after == {"id": 3, "ok": True}
    assert bound == {("127.0.0.1", port)}


@pytest.mark.parametrize("opted_in", [True, False])
def test_private_names_opt_in_a_name_that_resolves_to_loopback(tmp_path, opted_in):
    """As on Docker: `network.private_names`, given at start, lets a granted name that
    resolves to a private or loopback address through; without it, it is refused."""

    async def scenario() -> bytes:
        upstream = await echo_server("127.0.0.1")
        port = upstream.sockets[0].getsockname()[1]
        pod = Pod(tmp_path)
        await pod.start(private_names=[f"localhost:{port}"] if opted_in else [])
        node = await pod.open("fetch", [f"localhost:{port}"])
        raw = f"CONNECT localhost:{port} HTTP/1.1\r\nHost: x\r\n\r\nping".encode()
        answer = await exchange(pod, tmp_path, node, raw, until=b"PING")
        await pod.stop()
        upstream.close()
        return answer

    answer = run(scenario())
    if opted_in:
        assert answer == b"HTTP/1.1 200 Connection Established\r\n\r\nPING"
    else:
        assert answer_of(answer)[0].startswith("HTTP/1.1 403")


def test_main_serves_its_stdin_and_answers_on_its_stdout(tmp_path, monkeypatch):
    """`main` in this process, its stdin a pipe that ends: what the exec'd proxy does."""
    import io
    import os

    from sandbox_orch.egress import remote

    authority = RunAuthority("run-1")
    server = authority.server()
    lines = [
        {"op": "start", "id": 1, "ca": authority.ca_pem.decode(),
         "cert": server.cert_pem.decode(), "key": server.key_pem.decode()},
        {"op": "ping", "id": 2},
    ]  # fmt: skip
    made: list[str | None] = []
    mkstemp = remote.tempfile.mkstemp

    def recorded(*args: Any, **kwargs: Any) -> tuple[int, str]:
        made.append(kwargs.get("dir"))
        return mkstemp(*args, **kwargs)

    monkeypatch.setattr(remote.tempfile, "mkstemp", recorded)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    read, write = os.pipe()
    os.write(write, "".join(json.dumps(line) + "\n" for line in lines).encode())
    os.close(write)
    out = io.BytesIO()
    monkeypatch.setattr(remote.sys, "stdin", os.fdopen(read, "rb"))
    monkeypatch.setattr(remote.sys, "stdout", io.TextIOWrapper(out))
    monkeypatch.setattr(remote.tempfile, "tempdir", str(tmp_path))
    assert remote.main(["--port", str(port), "--host", "127.0.0.1"]) == 0
    started, ping = (json.loads(line) for line in out.getvalue().splitlines())
    assert started == {"id": 1, "ok": True, "port": port, "addresses": ["127.0.0.1"]}
    # Its key went into a directory of its own in the temporary directory.
    [workdir] = {str(Path(d)) for d in made}
    assert Path(workdir).parent == tmp_path
    assert ping == {"id": 2, "ok": True}
    assert out.getvalue().count(b"\n") == 2 and b", " not in out.getvalue()  # compact lines
    assert list(tmp_path.iterdir()) == []  # its working directory went with it


def test_main_says_how_it_is_called_and_refuses_anything_else(capsys):
    from sandbox_orch.egress import remote

    with pytest.raises(SystemExit) as helped:
        remote.main(["--help"])
    assert helped.value.code == 0
    usage = " ".join(capsys.readouterr().out.split())
    assert usage.startswith(
        "usage: python3 -m sandbox_orch.egress.remote [-h] --port PORT [--host HOST]"
    )
    assert "--host HOST one address to listen on (default: all)" in usage
    for argv, why in (
        ([], "the following arguments are required: --port"),
        (["--port", "x"], "argument --port: invalid int value: 'x'"),
    ):
        with pytest.raises(SystemExit) as refused:
            remote.main(argv)
        assert refused.value.code == 2 and why in capsys.readouterr().err
