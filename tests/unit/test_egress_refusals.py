"""The egress proxy's answers, exactly: each refusal's status and reason, grants as
written, the resolver's contract, splicing both ways, and what close() leaves behind.
Over real Unix and loopback sockets (no engine); written to kill mutants of the egress package."""

from __future__ import annotations

import asyncio
import os
import socket
import stat

import pytest

from sandbox_orch import egress
from sandbox_orch.egress import SOCKET_NAME, EgressProxy, Grant, Refused
from sandbox_orch.egress.http import reply, splice, target_of

from .proxytalk import LOOPBACK_2, Resolver, answer_of, echo_server, exchange


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def refused(raw: bytes, grants: list[str], resolver=None, eof: bool = False):
    async def scenario():
        proxy = EgressProxy("t", **({"resolver": resolver} if resolver else {}))
        directory = await proxy.open("n", grants)
        data = await exchange(directory, raw, eof)
        violations = proxy.violations("n")
        await proxy.close()
        return answer_of(data), violations

    return run(scenario())


PROXY = "sandbox-orch egress proxy: "


@pytest.mark.parametrize(
    ("raw", "status", "detail"),
    [
        (b"", "400 Bad Request", "the connection closed before a request"),
        (b"NOT HTTP AT ALL\r\n\r\n", "400 Bad Request", "bad request: "),
        (b"CONNECT nohost HTTP/1.1\r\nHost: x\r\n\r\n", "400 Bad Request",
         "bad CONNECT target 'nohost'"),
        (b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", "400 Bad Request",
         "only CONNECT and absolute http:// requests go through this proxy"),
        (b"GET https://a.example/ HTTP/1.1\r\nHost: a\r\n\r\n", "400 Bad Request",
         "only CONNECT and absolute http:// requests go through this proxy"),
        (b"CONNECT other.example:443 HTTP/1.1\r\nHost: x\r\n\r\n", "403 Forbidden",
         "other.example:443 is not granted to node 'n'"),
        (b"CONNECT h\xffst:443 HTTP/1.1\r\nHost: x\r\n\r\n", "400 Bad Request", "bad request: "),
    ],
)  # fmt: skip
def test_each_refusal_has_its_status_and_reason(raw, status, detail):
    (line, body), violations = refused(raw, ["granted.example:443"], eof=not raw)
    assert line == f"HTTP/1.1 {status}"
    assert body.startswith(PROXY + detail) and body.endswith("\n")
    assert violations == [{"kind": "egress", "detail": body[len(PROXY) : -1]}]


def test_a_name_that_does_not_resolve_is_a_bad_gateway():
    resolver = Resolver(error=socket.gaierror(-2, "Name or service not known"))
    raw = b"CONNECT api.example:8443 HTTP/1.1\r\nHost: x\r\n\r\n"
    (line, body), violations = refused(raw, ["api.example:8443"], resolver)
    assert line == "HTTP/1.1 502 Bad Gateway"
    assert body == PROXY + "api.example does not resolve: [Errno -2] Name or service not known\n"
    assert resolver.asked == [("api.example", 8443)]
    assert violations == []  # granted: a network failure (reported), not a violation


def test_a_name_resolving_to_private_addresses_is_refused_naming_them():
    resolver = Resolver(["93.184.216.34", "10.0.0.1", "127.0.0.1"])
    raw = b"CONNECT api.example:443 HTTP/1.1\r\nHost: x\r\n\r\n"
    (line, body), _ = refused(raw, ["api.example:443"], resolver)
    assert line == "HTTP/1.1 403 Forbidden"
    assert (
        body
        == PROXY + "api.example resolves to a non-public address (10.0.0.1, 127.0.0.1): refused\n"
    )


def test_a_target_that_does_not_answer_is_a_bad_gateway():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    raw = f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    (line, body), violations = refused(raw, [f"127.0.0.1:{port}"])
    assert line == "HTTP/1.1 502 Bad Gateway"
    assert body.startswith(PROXY + f"cannot connect to 127.0.0.1:{port}: ")
    assert violations == []  # granted: a network failure, not a violation


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("api.example:443", "api.example", 443),
        ("API.Example.COM.:8443", "api.example.com", 8443),
        ("[::1]:443", "::1", 443),
        ("[2001:db8::1]:80", "2001:db8::1", 80),
        ("XBOX.example.X:443", "xbox.example.x", 443),  # only brackets and the dot go
    ],
)
def test_grants_parse_host_and_port_as_written(text, host, port):
    assert Grant.parse(text) == Grant(host, port)


def _request(target: bytes, *headers: tuple[bytes, bytes]):
    import h11

    server = h11.Connection(h11.SERVER)
    lines = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    server.receive_data(b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n" + lines + b"\r\n")
    return server.next_event()


def test_plain_http_is_forwarded_in_origin_form_without_proxy_headers():
    request = _request(
        b"http://API.Example.:8080",
        (b"Proxy-Authorization", b"secret"),
        (b"Connection", b"keep-alive"),
        (b"X-Kept", b"yes"),
    )
    grant, head = target_of(request)
    assert grant == Grant("api.example", 8080)
    assert head == b"GET / HTTP/1.1\r\nhost: h\r\nx-kept: yes\r\nconnection: close\r\n\r\n"


def test_plain_http_defaults_to_port_80_and_keeps_the_query():
    grant, head = target_of(_request(b"http://a.example/p/q?x=1&y=2"))
    assert grant == Grant("a.example", 80)
    assert head.startswith(b"GET /p/q?x=1&y=2 HTTP/1.1\r\n")


def test_the_system_resolver_returns_each_address_once():
    addresses = run(egress.system_resolver(LOOPBACK_2, 443))
    assert addresses == [LOOPBACK_2]
    assert "127.0.0.1" in run(egress.system_resolver("localhost", 443))


def test_connect_splices_both_ways_after_the_answer():
    async def scenario():
        server = await echo_server()
        port = server.sockets[0].getsockname()[1]
        proxy = EgressProxy("t")
        directory = await proxy.open("n", [f"{LOOPBACK_2}:{port}"])
        reader, writer = await asyncio.open_unix_connection(str(directory / SOCKET_NAME))
        writer.write(f"CONNECT {LOOPBACK_2}:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status = await reader.readuntil(b"\r\n\r\n")
        writer.write(b"sent after the answer")  # only the client -> upstream pipe carries it
        await writer.drain()
        echoed = await reader.readexactly(len(b"sent after the answer"))
        writer.write_eof()
        rest = await reader.read()
        writer.close()
        await proxy.close()
        server.close()
        return status, echoed, rest

    status, echoed, rest = run(scenario())
    assert status == b"HTTP/1.1 200 Connection Established\r\n\r\n"
    assert echoed == b"SENT AFTER THE ANSWER" and rest == b""


def test_a_silent_client_is_dropped_after_the_head_timeout(monkeypatch):
    monkeypatch.setattr(egress.core, "HEAD_TIMEOUT", 0.2)

    async def scenario():
        proxy = EgressProxy("t")
        directory = await proxy.open("n", ["a.example:443"])
        reader, writer = await asyncio.open_unix_connection(str(directory / SOCKET_NAME))
        data = await asyncio.wait_for(reader.read(), 5)  # EOF: the proxy hung up
        writer.close()
        await proxy.close()
        return data

    assert run(scenario()) == b""


def test_open_and_close_manage_the_socket_and_the_connections():
    async def scenario():
        before = os.umask(0o022)
        try:
            proxy = EgressProxy("run-1")
            directory = await proxy.open("n", ["a.example:443"])
        finally:
            os.umask(before)
        assert proxy.root.name.startswith("run-1-")
        assert stat.S_IMODE(directory.stat().st_mode) == 0o755
        assert stat.S_IMODE((directory / SOCKET_NAME).stat().st_mode) == 0o666
        assert await proxy.open("n", ["other.example:1"]) == directory  # opened once
        # A connection that finished is forgotten; one still open is cancelled by close.
        await exchange(directory, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        node = proxy.nodes["n"]
        await asyncio.gather(*list(node.connections))
        assert node.connections == set()
        _, writer = await asyncio.open_unix_connection(str(directory / SOCKET_NAME))
        writer.write(b"CONNECT a.exa")  # half a head: the proxy waits for more
        await writer.drain()
        while not node.connections:
            await asyncio.sleep(0)  # yield to the server until it has accepted
        hanging = set(node.connections)
        await proxy.close()
        assert all(task.done() for task in hanging)
        assert not any(server.is_serving() for server in proxy._servers.values())
        assert not proxy.root.exists()
        await proxy.close()  # a second close finds nothing to remove, and says nothing
        writer.close()
        return proxy

    proxy = run(scenario())
    assert proxy.violations("never-opened") == []


def test_a_reply_to_a_gone_client_is_not_an_error():
    class Gone:
        def __init__(self):
            self.written = b""

        def write(self, data):
            self.written += data

        async def drain(self):
            raise ConnectionResetError

    gone = Gone()
    run(reply(gone, 418, "teapot"))
    assert gone.written.startswith(b"HTTP/1.1 418 Error\r\n")
    assert gone.written.endswith(b"\r\n\r\nsandbox-orch egress proxy: teapot\n")


def test_refused_carries_its_status():
    error = Refused(403, "why")
    assert error.status == 403 and str(error) == "why"


def test_a_target_that_never_accepts_is_a_bad_gateway_after_the_connect_timeout(monkeypatch):
    async def never(*_args, **_kwargs):
        await asyncio.Event().wait()

    monkeypatch.setattr(egress.core, "CONNECT_TIMEOUT", 0.2)
    monkeypatch.setattr(asyncio, "open_connection", never)
    raw = b"CONNECT 192.0.2.1:443 HTTP/1.1\r\nHost: x\r\n\r\n"
    (line, body), _ = refused(raw, ["192.0.2.1:443"])
    assert line == "HTTP/1.1 502 Bad Gateway"
    assert body.startswith(PROXY + "cannot connect to 192.0.2.1:443: ")


class _ClosingSink:
    """A writer whose half-close fails as a socket already gone does (OSError) or as a
    transport already closing does (RuntimeError)."""

    def __init__(self, error: type[Exception]) -> None:
        self.error = error
        self.data = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        return None

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        raise self.error("the peer is gone")

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("error", [OSError, ConnectionResetError, RuntimeError])
def test_a_splice_ends_quietly_when_a_side_cannot_be_half_closed(error):
    """A connection whose other end vanished must end the splice, not the proxy task."""

    async def scenario():
        node, upstream = asyncio.StreamReader(), asyncio.StreamReader()
        node.feed_data(b"request")
        node.feed_eof()
        upstream.feed_data(b"answer")
        upstream.feed_eof()
        to_node, to_upstream = _ClosingSink(error), _ClosingSink(error)
        await splice(node, to_node, upstream, to_upstream)
        return to_node, to_upstream

    to_node, to_upstream = run(scenario())
    assert (to_node.data, to_upstream.data) == (b"answer", b"request")
    assert to_upstream.closed


def test_the_socket_directories_live_in_the_private_egress_directory(tmp_path, monkeypatch):
    """Under the private root (never mountable), one fresh directory per run."""
    from sandbox_orch import store

    monkeypatch.setattr(store, "private_root", lambda: tmp_path / "private")
    first, second = EgressProxy("run-1"), EgressProxy("run-1")
    assert first.root.parent == second.root.parent == tmp_path / "private" / "egress"
    assert first.root != second.root and first.root.name.startswith("run-1-")
    assert stat.S_IMODE(first.root.stat().st_mode) == 0o700


def test_a_socket_directory_that_cannot_be_made_is_an_infrastructure_error(monkeypatch):
    from sandbox_orch.errors import InfrastructureError

    def refuse(**_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(egress.proxy.tempfile, "mkdtemp", refuse)
    with pytest.raises(InfrastructureError) as raised:
        EgressProxy("run-1")
    assert str(raised.value) == (
        "cannot make the egress socket directory: [Errno 28] No space left on device"
    )


# --- granted but unreachable: reported at once (issue 12: no minutes of silence) ----------


def unreachable_reports(raw: bytes, grants: list[str], resolver=None, times: int = 1):
    """What the proxy reported as unreachable, and its answers, for `times` same requests."""
    reports: list[tuple[str, str, str]] = []

    async def scenario():
        proxy = EgressProxy(
            "t", **({"resolver": resolver} if resolver else {}), on_unreachable=_append(reports)
        )
        directory = await proxy.open("n", grants)
        answers = [answer_of(await exchange(directory, raw)) for _ in range(times)]
        await proxy.close()
        return answers

    return run(scenario()), reports


def _append(reports):
    return lambda node, target, why: reports.append((node, target, why))


def _free_port() -> int:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_refused_connection_is_reported_once_per_target_and_reason():
    port = _free_port()
    raw = f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    answers, reports = unreachable_reports(raw, [f"127.0.0.1:{port}"], times=3)
    assert reports == [("n", f"127.0.0.1:{port}", "connection refused")]  # not 3: retries
    assert all(line == "HTTP/1.1 502 Bad Gateway" for line, _ in answers)
    assert answers[0][1] == PROXY + f"cannot connect to 127.0.0.1:{port}: connection refused\n"


def test_a_name_that_does_not_resolve_is_reported_as_unreachable():
    resolver = Resolver(error=socket.gaierror(-2, "Name or service not known"))
    raw = b"CONNECT api.example:443 HTTP/1.1\r\nHost: x\r\n\r\n"
    _, reports = unreachable_reports(raw, ["api.example:443"], resolver)
    assert reports == [
        ("n", "api.example:443", "api.example does not resolve (Name or service not known)")
    ]


def test_a_connect_timeout_is_reported_as_no_answer(monkeypatch):
    async def never(*_args, **_kwargs):
        await asyncio.Event().wait()

    monkeypatch.setattr(egress.core, "CONNECT_TIMEOUT", 0.2)
    monkeypatch.setattr(asyncio, "open_connection", never)
    raw = b"GET http://192.0.2.1:8080/v1 HTTP/1.1\r\nHost: x\r\n\r\n"
    _, reports = unreachable_reports(raw, ["192.0.2.1:8080"])
    assert reports == [("n", "192.0.2.1:8080", "no answer in 0.2s")]


def test_refusals_and_reachable_targets_are_not_reported_as_unreachable():
    resolver = Resolver(["10.0.0.1"])  # refused by policy: a violation, not a failure
    raw = b"CONNECT api.example:443 HTTP/1.1\r\nHost: x\r\n\r\n"
    _, reports = unreachable_reports(raw, ["api.example:443"], resolver)
    assert reports == []
    _, reports = unreachable_reports(raw, ["other.example:443"])  # not granted
    assert reports == []


def test_unreachable_reports_per_node_are_bounded(monkeypatch):
    monkeypatch.setattr(egress.core, "MAX_REPORTED", 2)
    ports = [_free_port() for _ in range(4)]
    reports: list[tuple[str, str, str]] = []

    async def scenario():
        proxy = EgressProxy("t", on_unreachable=_append(reports))
        directory = await proxy.open("n", [f"127.0.0.1:{p}" for p in ports])
        for port in ports:
            raw = f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: x\r\n\r\n"
            await exchange(directory, raw.encode())
        await proxy.close()

    run(scenario())
    assert [target for _, target, _ in reports] == [f"127.0.0.1:{p}" for p in ports[:2]]


@pytest.mark.parametrize(
    ("error", "why"),
    [
        (TimeoutError(), f"no answer in {egress.CONNECT_TIMEOUT:g}s"),
        (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
        (OSError(113, "No route to host"), "no route to host"),
        (OSError("odd"), "odd"),
        (OSError(), "OSError"),
        (OSError(5, "X" * 300), "x" * 200),
        (OSError("y" * 300), "y" * 200),
    ],
)
def test_why_unreachable_in_a_few_words(error, why):
    assert egress.why_unreachable(error) == why
