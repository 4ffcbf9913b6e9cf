"""The egress proxy, attacked over real sockets on loopback (no engine needed)."""

from __future__ import annotations

import asyncio

import pytest

from sandbox_orch.egress import SOCKET_NAME, EgressProxy, routable

from .proxytalk import exchange


class Upstream:
    """A loopback server that records what it receives and answers a fixed response."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    async def start(self) -> int:
        async def handle(reader, writer):
            data = await reader.read(65536)
            self.received.append(data)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            await writer.drain()
            writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]


def run(coro):
    return asyncio.run(coro)


def test_plain_http_to_a_granted_ip_literal_is_forwarded_in_origin_form():
    async def scenario():
        upstream = Upstream()
        port = await upstream.start()
        proxy = EgressProxy("t")
        directory = await proxy.open("n", [f"127.0.0.1:{port}"])
        answer = await exchange(
            directory,
            f"GET http://127.0.0.1:{port}/v1/x?q=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Proxy-Authorization: secret\r\n\r\n".encode(),
        )
        await proxy.close()
        return answer, upstream.received, proxy

    answer, received, proxy = run(scenario())
    assert answer.endswith(b"ok")
    (request,) = received
    assert request.startswith(b"GET /v1/x?q=1 HTTP/1.1\r\n")
    assert b"proxy-authorization" not in request.lower() and b"connection: close" in request.lower()
    assert not proxy.root.exists()  # sockets and directories removed on close


def test_connect_to_a_granted_target_splices_bytes_both_ways():
    async def scenario():
        async def echo(reader, writer):
            writer.write(await reader.read(100))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        proxy = EgressProxy("t")
        directory = await proxy.open("n", [f"127.0.0.1:{port}"])
        answer = await exchange(
            directory,
            f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\nhello".encode(),
        )
        await proxy.close()
        return answer

    assert run(scenario()) == b"HTTP/1.1 200 Connection Established\r\n\r\nhello"


@pytest.mark.parametrize(
    "request_line",
    [
        b"CONNECT api.evil.test:443 HTTP/1.1\r\nHost: api.evil.test:443\r\n\r\n",
        b"GET http://api.evil.test/ HTTP/1.1\r\nHost: api.evil.test\r\n\r\n",
        b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n",
        b"CONNECT api.granted.test:80 HTTP/1.1\r\nHost: api.granted.test:80\r\n\r\n",  # granted host, other port
    ],
)
def test_targets_not_granted_are_refused_and_recorded(request_line):
    async def scenario():
        proxy = EgressProxy("t", resolver=_never_resolve)
        directory = await proxy.open("n", ["api.granted.test:443"])
        answer = await exchange(directory, request_line)
        await proxy.close()
        return answer, proxy.violations("n")

    answer, violations = run(scenario())
    assert answer.startswith(b"HTTP/1.1 403 ")
    (violation,) = violations
    assert violation["kind"] == "egress" and "is not granted to node 'n'" in violation["detail"]


@pytest.mark.parametrize(
    "addresses",
    [["10.0.0.5"], ["169.254.169.254"], ["127.0.0.1"], ["::1"], ["::ffff:10.1.2.3"],
     ["192.168.1.1"], ["172.17.0.2"], ["100.64.0.1"], ["93.184.216.34", "10.0.0.1"]],
)  # fmt: skip
def test_a_granted_name_resolving_to_a_non_public_address_is_refused(addresses):
    async def resolve(host, port):
        return addresses

    async def scenario():
        proxy = EgressProxy("t", resolver=resolve)
        directory = await proxy.open("n", ["api.granted.test:443"])
        answer = await exchange(
            directory,
            b"CONNECT api.granted.test:443 HTTP/1.1\r\nHost: api.granted.test:443\r\n\r\n",
        )
        await proxy.close()
        return answer, proxy.violations("n")

    answer, violations = run(scenario())
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert "resolves to a non-public address" in violations[0]["detail"]


def test_the_checked_address_is_the_one_connected_to():
    """No rebinding: the proxy connects to the address it resolved and checked."""

    async def scenario():
        upstream = Upstream()
        port = await upstream.start()
        answers = iter([["127.0.0.1"], ["10.9.9.9"]])  # a second lookup would be refused

        async def resolve(host, port):
            return next(answers)

        proxy = EgressProxy("t", resolver=resolve, allowed_address=lambda a: a == "127.0.0.1")
        directory = await proxy.open("n", [f"api.granted.test:{port}"])
        answer = await exchange(
            directory, f"GET http://api.granted.test:{port}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        )
        await proxy.close()
        return answer, upstream.received

    answer, received = run(scenario())
    assert answer.endswith(b"ok") and len(received) == 1


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",  # origin form: no target to check
        b"GET https://127.0.0.1/ HTTP/1.1\r\nHost: x\r\n\r\n",  # TLS must use CONNECT
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET http://a\x00b/ HTTP/1.1\r\n\r\n",
        b"CONNECT 127.0.0.1:80 HTTP/1.1\r\n\r\n",  # no Host header
    ],
)
def test_malformed_or_unsupported_requests_are_refused(raw):
    async def scenario():
        proxy = EgressProxy("t", resolver=_never_resolve)
        directory = await proxy.open("n", ["127.0.0.1:80"])
        answer = await exchange(directory, raw)
        await proxy.close()
        return answer

    assert run(scenario()).startswith(b"HTTP/1.1 400 ")


def test_each_node_has_its_own_socket_and_allowlist():
    async def scenario():
        upstream = Upstream()
        port = await upstream.start()
        proxy = EgressProxy("t")
        allowed = await proxy.open("a", [f"127.0.0.1:{port}"])
        other = await proxy.open("b", [])
        request = f"GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        first, second = await exchange(allowed, request), await exchange(other, request)
        await proxy.close()
        return first, second, proxy

    first, second, proxy = run(scenario())
    assert first.endswith(b"ok") and second.startswith(b"HTTP/1.1 403")
    assert proxy.violations("a") == [] and len(proxy.violations("b")) == 1


def test_routable():
    assert routable("93.184.216.34") and routable("2606:2800:220:1::1")
    for address in (
        "10.0.0.1",
        "127.0.0.1",
        "169.254.169.254",
        "fd00::1",
        "::1",
        "0.0.0.0",
        "224.0.0.1",
    ):
        assert not routable(address), address


async def _never_resolve(host, port):
    raise AssertionError(f"must not resolve {host}")


def test_closing_with_a_connection_still_open_ends_it_quietly(caplog):
    """A node stopped mid-answer leaves its spliced connection open until the run's proxy
    closes: that close must end it without an asyncio error (once a traceback)."""

    async def scenario():
        held = asyncio.Event()

        async def hold(reader, writer):
            held.set()
            await reader.read()  # until the proxy goes away

        server = await asyncio.start_server(hold, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        proxy = EgressProxy("t")
        directory = await proxy.open("n", [f"127.0.0.1:{port}"])
        _, writer = await asyncio.open_unix_connection(str(directory / SOCKET_NAME))
        writer.write(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        await asyncio.wait_for(held.wait(), 5)
        (node,) = proxy.nodes.values()
        assert len(node.connections) == 1
        await proxy.close()
        await asyncio.sleep(0)  # the stream callback runs once the handler is done
        writer.close()
        server.close()
        return node

    with caplog.at_level("ERROR", logger="asyncio"):
        node = run(scenario())
    assert not node.connections
    assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text


def test_a_connection_that_fails_unexpectedly_while_closing_does_not_stop_the_close(monkeypatch):
    """close() waits for every connection and removes the sockets even when one of them
    ends with an error of its own (a bug must not leave the run's sockets behind)."""

    async def failing_serve(self, egress, reader, writer):
        try:
            await reader.read()  # held open until the proxy closes
        finally:
            raise RuntimeError("a bug in a connection")

    async def scenario():
        monkeypatch.setattr(EgressProxy, "_serve", failing_serve)
        proxy = EgressProxy("t")
        directory = await proxy.open("n", ["127.0.0.1:9"])
        _, writer = await asyncio.open_unix_connection(str(directory / SOCKET_NAME))
        (node,) = proxy.nodes.values()
        while not node.connections:  # accepted: the handler task exists
            await asyncio.sleep(0)
        await proxy.close()
        writer.close()
        return proxy

    proxy = run(scenario())
    assert not proxy.root.exists()
