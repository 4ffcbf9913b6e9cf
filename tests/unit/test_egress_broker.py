"""Brokered secrets, over real sockets (no engine): a node's request to its broker reaches a
local TLS upstream (a trustme CA) with the real key in place of the placeholder; every
refusal is exact; bad certificates, dead upstreams and private addresses are refused."""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
from dataclasses import dataclass, field

import h11
import pytest
import trustme

from sandbox_orch import egress
from sandbox_orch.egress import SOCKET_NAME, Brokered, EgressProxy, base_url
from sandbox_orch.egress.broker import (
    addressed,
    authority_of,
    in_words,
    route,
    tls_context,
    unsafe,
    upstream_of,
    why_tls,
)
from sandbox_orch.egress.grants import Grant
from sandbox_orch.egress.http import Refused

from .proxytalk import Resolver, answer_of, exchange

SECRET = "sk-real-0123456789abcdef"
PLACEHOLDER = "sandbox-orch-placeholder-ANTHROPIC_API_KEY"
PROXY = "sandbox-orch egress proxy: "


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def server_context(ca: trustme.CA, *names: str, **kwargs) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names, **kwargs).configure_cert(context)
    return context


@dataclass
class Upstream:
    """A TLS server on 127.0.0.1: records each request (head and body as h11 parsed them)
    and answers what `answer` says."""

    context: ssl.SSLContext
    answer: object = None  # async (request, body, writer) -> None; default: 200 "ok"
    requests: list[tuple[h11.Request, bytes]] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)  # each request's bytes as they came
    port: int = 0

    async def start(self) -> Upstream:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader, writer):
        connection = h11.Connection(h11.SERVER)
        request, body, raw = None, b"", b""
        try:
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    raw += data
                    connection.receive_data(data)
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:
                    return
            self.requests.append((request, body))
            self.raw.append(raw)
            if self.answer is None:
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            else:
                await self.answer(request, body, writer)
            await writer.drain()
        except (ConnectionError, ssl.SSLError, h11.ProtocolError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        self.server.close()


def entry(upstream: str, ca_bundle: str | None = None, **kwargs) -> Brokered:
    values = {
        "name": "ANTHROPIC_API_KEY",
        "upstream": upstream,
        "header": "x-api-key",
        "scheme": "",
        "placeholder": PLACEHOLDER,
        "value": SECRET,
        "ca_bundle": ca_bundle,
    }
    values.update(kwargs)
    return Brokered(**values)


@dataclass
class Outcome:
    answer: bytes
    violations: list[dict[str, str]]
    reports: list[tuple[str, str, str]]
    requests: list[tuple[h11.Request, bytes]]
    raw: list[bytes] = field(default_factory=list)

    @property
    def status(self) -> str:
        return answer_of(self.answer)[0]

    @property
    def body(self) -> str:
        return answer_of(self.answer)[1]


def broker(
    raw: bytes,
    entries_for,  # (port) -> list[Brokered]
    context: ssl.SSLContext | None = None,
    answer=None,
    **proxy_kwargs,
) -> Outcome:
    async def scenario():
        upstream = None
        port = 1
        if context is not None:
            upstream = await Upstream(context, answer).start()
            port = upstream.port
        reports: list[tuple[str, str, str]] = []
        proxy = EgressProxy(
            "t", on_unreachable=lambda *report: reports.append(report), **proxy_kwargs
        )
        directory = await proxy.open("n", [], entries_for(port))
        data = await exchange(directory, raw.replace(b"PORT", str(port).encode()))
        violations = proxy.violations("n")
        await proxy.close()
        if upstream is not None:
            upstream.close()
        if upstream is None:
            return Outcome(data, violations, reports, [])
        return Outcome(data, violations, reports, upstream.requests, upstream.raw)

    return run(scenario())


def local(ca_file: str, **kwargs):
    return lambda port: [entry(f"https://127.0.0.1:{port}", ca_file, **kwargs)]


def post(path: bytes = b"/v1/messages", *headers: bytes, body: bytes = b"{}") -> bytes:
    lines = b"".join(h + b"\r\n" for h in headers)
    return (
        b"POST /_broker/127.0.0.1:PORT" + path + b" HTTP/1.1\r\nHost: 127.0.0.1:3128\r\n"
        + lines + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


# --- the interface --------------------------------------------------------------------------


def test_base_url_names_the_upstream_under_the_broker_prefix():
    assert (
        base_url("https://api.anthropic.com") == "http://127.0.0.1:3128/_broker/api.anthropic.com"
    )
    assert base_url("https://API.Example.:443/") == "http://127.0.0.1:3128/_broker/api.example"
    assert base_url("https://127.0.0.1:8443") == "http://127.0.0.1:3128/_broker/127.0.0.1:8443"
    assert base_url("https://[::1]:8443") == "http://127.0.0.1:3128/_broker/[::1]:8443"


@pytest.mark.parametrize(
    "upstream",
    [
        "http://api.example",
        "https://api.example/v1",
        "https://user@api.example",
        "https://user:pw@api.example",
        "https://api.example?x=1",
        "https://api.example#x",
        "https://api.example:0",
        "https://api.example:65536",
        "https://api.example:https",
        "https://:8443",
        "api.example",
    ],
)
def test_an_upstream_that_is_not_https_host_port_is_refused(upstream):
    with pytest.raises(ValueError) as raised:
        entry(upstream)
    assert str(raised.value) == f"broker upstream {upstream!r} is not https://host[:port]"


def test_an_upstream_may_carry_a_port_up_to_65535_and_a_trailing_slash():
    assert upstream_of("https://a.example:65535/") == Grant("a.example", 65535)
    assert upstream_of("https://a.example:1") == Grant("a.example", 1)
    assert upstream_of("https://A.Example.") == Grant("a.example", 443)
    assert entry("https://a.example:8443").target == Grant("a.example", 8443)
    assert entry("https://a.example:443").authority == "a.example"
    assert authority_of(Grant("::1", 443)) == "[::1]"
    assert authority_of(Grant("10.0.0.1", 443)) == "10.0.0.1"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"header": "X-Api-Key"}, "ANTHROPIC_API_KEY: header 'X-Api-Key' is not a lower-case name"),
        ({"header": "x api"}, "ANTHROPIC_API_KEY: header 'x api' is not a lower-case name"),
        ({"header": ""}, "ANTHROPIC_API_KEY: header '' is not a lower-case name"),
        ({"value": SECRET + "\n"}, "ANTHROPIC_API_KEY: the value cannot be sent in a header"),
        ({"value": ""}, "ANTHROPIC_API_KEY: the value cannot be sent in a header"),
        ({"value": " " + SECRET}, "ANTHROPIC_API_KEY: the value cannot be sent in a header"),
        ({"value": SECRET + "é"}, "ANTHROPIC_API_KEY: the value cannot be sent in a header"),
        ({"placeholder": "a\tb"}, "ANTHROPIC_API_KEY: the placeholder cannot be sent in a header"),
        ({"scheme": "Bearer\t"}, "ANTHROPIC_API_KEY: the value cannot be sent in a header"),
    ],
)
def test_an_entry_that_cannot_be_sent_is_refused_without_quoting_it(changes, message):
    with pytest.raises(ValueError) as raised:
        entry("https://a.example", **changes)
    assert str(raised.value) == message
    assert SECRET not in str(raised.value)


def test_an_entry_with_a_scheme_and_inner_spaces_is_accepted():
    made = entry("https://a.example", header="authorization", scheme="Bearer ", value="a b")
    assert made.scheme + made.value == "Bearer a b"


def test_the_value_is_never_in_a_repr():
    made = entry("https://a.example")
    assert SECRET not in repr(made) and SECRET not in str(made)
    assert "placeholder='" + PLACEHOLDER in repr(made)
    assert "NodeEgress" in repr(_opened_node(made)) and SECRET not in repr(_opened_node(made))


def _opened_node(made: Brokered):
    async def scenario():
        proxy = EgressProxy("t")
        await proxy.open("n", [], [made])
        node = proxy.nodes["n"]
        await proxy.close()
        return node

    return run(scenario())


def test_a_route_holds_the_value_but_never_shows_it():
    headers = (b"x-api-key", PLACEHOLDER.encode())
    routed = route(
        "n", [entry("https://a.example")], _request(b"GET", b"/_broker/a.example/v1/", headers)
    )
    assert (b"x-api-key", SECRET.encode()) in routed.request.headers
    assert SECRET not in repr(routed) and "a.example" in repr(routed)


def test_a_node_with_only_brokered_secrets_gets_its_socket():
    made = entry("https://a.example")
    node = _opened_node(made)
    assert node.grants == frozenset() and node.brokered == (made,)


# --- the exchange -----------------------------------------------------------------------------


def test_the_real_key_reaches_the_upstream_in_its_header_and_the_placeholder_does_not(ca, ca_file):
    raw = post(
        b"/v1/messages?beta=true",
        b"x-api-key: " + PLACEHOLDER.encode(),
        b"anthropic-version: 2023-06-01",
        body=b'{"model": "m"}',
    )
    outcome = broker(raw, local(ca_file), server_context(ca, "127.0.0.1"))
    assert outcome.status == "HTTP/1.1 200 OK" and outcome.body == "ok"
    assert b"connection: close\r\n" in outcome.answer.lower()
    ((request, body),) = outcome.requests
    assert request.method == b"POST" and request.target == b"/v1/messages?beta=true"
    assert body == b'{"model": "m"}'
    assert outcome.raw == [
        b"POST /v1/messages?beta=true HTTP/1.1\r\n"
        + f"host: 127.0.0.1:{request_port(outcome)}\r\n".encode()
        + f"x-api-key: {SECRET}\r\n".encode()
        + b"anthropic-version: 2023-06-01\r\ncontent-length: 14\r\nconnection: close\r\n\r\n"
        + b'{"model": "m"}'
    ]  # exactly: nothing before, nothing after, names as the upstream sees them
    assert outcome.violations == [] and outcome.reports == []


def request_port(outcome: Outcome) -> int:
    ((request, _),) = outcome.requests
    host = dict(request.headers)[b"host"]
    return int(host.rpartition(b":")[2])


def test_absolute_form_to_the_local_proxy_is_the_broker_too(ca, ca_file):
    for origin in (b"http://localhost:3128", b"HTTP://LocalHost:3128", b"http://127.0.0.1:3128"):
        raw = post(b"/v1/models", b"x-api-key: " + PLACEHOLDER.encode())
        raw = raw.replace(b"POST /_broker/", b"POST " + origin + b"/_broker/")
        outcome = broker(raw, local(ca_file), server_context(ca, "127.0.0.1"))
        assert outcome.status == "HTTP/1.1 200 OK"
        ((request, _),) = outcome.requests
        assert request.target == b"/v1/models"
        assert (b"x-api-key", SECRET.encode()) in request.headers


@pytest.mark.parametrize(
    "target",
    [
        b"/_broker",  # no slash after the prefix: not the broker
        b"/_BROKER/a.example/v1/x",
        b"http://127.0.0.1:3128/_BROKER/a.example/v1/x",
        b"http://127.0.0.2:3128/_broker/a.example/v1/x",
        b"http://localhost:3129/_broker/a.example/v1/x",
        b"https://localhost:3128/_broker/a.example/v1/x",
        b"/v1/_broker/a.example/v1/x",
    ],
)
def test_only_the_broker_prefix_on_the_local_proxy_is_the_broker(target):
    assert addressed(_request(b"GET", target)) is None


@pytest.mark.parametrize(
    ("target", "rest"),
    [
        (b"/_broker/a.example/v1/x?q=1", "a.example/v1/x?q=1"),
        (b"http://localhost:3128/_broker/a.example/v1/x", "a.example/v1/x"),
        (b"http://127.0.0.1:3128/_broker/", ""),
        (b"/_broker/", ""),
    ],
)
def test_a_broker_target_is_what_follows_the_prefix(target, rest):
    assert addressed(_request(b"GET", target)) == rest


def _request(method: bytes, target: bytes, *headers: tuple[bytes, bytes]) -> h11.Request:
    return h11.Request(method=method, target=target, headers=[(b"host", b"x"), *headers])


def test_streamed_answers_reach_the_node_chunk_by_chunk(ca, ca_file):
    """Server-sent events: the first event reaches the node while the upstream still holds
    the second (it sends it only once the node has seen the first)."""

    async def scenario():
        seen_first = asyncio.Event()

        async def answer(request, body, writer):
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
            )
            writer.write(b"14\r\nevent: one\ndata: 1\n\n\r\n")
            await writer.drain()
            await asyncio.wait_for(seen_first.wait(), 5)
            writer.write(b"14\r\nevent: two\ndata: 2\n\n\r\n0\r\n\r\n")

        upstream = await Upstream(server_context(ca, "127.0.0.1"), answer).start()
        proxy = EgressProxy("t")
        directory = await proxy.open("n", [], local(ca_file)(upstream.port))
        reader, writer = await asyncio.open_unix_connection(str(directory / SOCKET_NAME))
        writer.write(post(b"/v1/messages").replace(b"PORT", str(upstream.port).encode()))
        head = await reader.readuntil(b"\r\n\r\n")
        first = await reader.readuntil(b"data: 1\n\n\r\n")
        seen_first.set()
        rest = await reader.read()
        writer.close()
        await proxy.close()
        upstream.close()
        return head, first, rest

    head, first, rest = run(scenario())
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding: chunked\r\n" in head.lower()  # h11 frames it anew
    assert b"connection: close\r\n" in head
    assert first == b"14\r\nevent: one\ndata: 1\n\n\r\n"
    assert rest == b"14\r\nevent: two\ndata: 2\n\n\r\n0\r\n\r\n"


def test_a_chunked_request_body_is_streamed_to_the_upstream(ca, ca_file):
    async def scenario():
        upstream = await Upstream(server_context(ca, "127.0.0.1")).start()
        proxy = EgressProxy("t")
        directory = await proxy.open("n", [], local(ca_file)(upstream.port))
        reader, writer = await asyncio.open_unix_connection(str(directory / SOCKET_NAME))
        writer.write(
            f"POST /_broker/127.0.0.1:{upstream.port}/v1/files HTTP/1.1\r\nHost: x\r\n"
            "transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n".encode()
        )
        await writer.drain()
        writer.write(b"6\r\n world\r\n0\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        await proxy.close()
        upstream.close()
        return data, upstream.requests

    data, requests = run(scenario())
    assert answer_of(data) == ("HTTP/1.1 200 OK", "ok")
    ((request, body),) = requests
    assert body == b"hello world"
    assert (b"transfer-encoding", b"chunked") in request.headers


def test_expect_100_continue_is_answered_by_the_proxy_not_forwarded(ca, ca_file):
    async def scenario():
        upstream = await Upstream(server_context(ca, "127.0.0.1")).start()
        proxy = EgressProxy("t")
        directory = await proxy.open("n", [], local(ca_file)(upstream.port))
        reader, writer = await asyncio.open_unix_connection(str(directory / SOCKET_NAME))
        writer.write(
            f"POST /_broker/127.0.0.1:{upstream.port}/v1/x HTTP/1.1\r\nHost: x\r\n"
            "expect: 100-continue\r\ncontent-length: 4\r\n\r\n".encode()
        )
        interim = await reader.readuntil(b"\r\n\r\n")  # before the body is sent
        writer.write(b"body")
        data = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        await proxy.close()
        upstream.close()
        return interim, data, upstream.requests

    interim, data, requests = run(scenario())
    assert interim == b"HTTP/1.1 100 \r\n\r\n"
    assert answer_of(data) == ("HTTP/1.1 200 OK", "ok")
    ((request, body),) = requests
    assert body == b"body" and b"expect" not in dict(request.headers)


def test_credentials_the_node_adds_are_not_forwarded(ca, ca_file):
    raw = post(
        b"/v1/messages",
        b"x-api-key: " + PLACEHOLDER.encode(),
        b"x-api-key: sk-the-nodes-own",
        b"authorization: Bearer " + PLACEHOLDER.encode(),  # the placeholder, wrong header
        b"Cookie: session=abc",
        b"Proxy-Authorization: Basic eDp5",
        b"Proxy-Connection: keep-alive",
        b"Keep-Alive: timeout=5",
        b"TE: trailers",
        b"Upgrade: h2c",
        b"Connection: upgrade, x-dropped-by-name,x-dropped-too",
        b"X-Dropped-By-Name: 1",
        b"X-Dropped-Too: 1",
        b"Proxy-Anything: 1",
        b"X-Kept: " + PLACEHOLDER.encode(),  # not a credential header: the node's business
    )
    outcome = broker(raw, local(ca_file), server_context(ca, "127.0.0.1"))
    assert outcome.status == "HTTP/1.1 200 OK"
    ((request, _),) = outcome.requests
    assert [name for name, _ in request.headers] == [
        b"host", b"x-api-key", b"x-kept", b"content-length", b"connection",
    ]  # fmt: skip
    assert dict(request.headers)[b"x-api-key"] == SECRET.encode()
    assert dict(request.headers)[b"connection"] == b"close"


def test_a_connection_header_cannot_unframe_the_body(ca, ca_file):
    raw = post(b"/v1/x", b"Connection: content-length, transfer-encoding", body=b"framed")
    outcome = broker(raw, local(ca_file), server_context(ca, "127.0.0.1"))
    assert outcome.status == "HTTP/1.1 200 OK"
    ((request, body),) = outcome.requests
    assert body == b"framed" and (b"content-length", b"6") in request.headers


def test_a_bearer_placeholder_is_swapped_with_its_scheme(ca, ca_file):
    entries = local(
        ca_file, header="authorization", scheme="Bearer ", name="OPENAI_API_KEY", paths=("/v1/",)
    )
    raw = post(b"/v1/responses", b"Authorization: Bearer " + PLACEHOLDER.encode())
    outcome = broker(raw, entries, server_context(ca, "127.0.0.1"))
    ((request, _),) = outcome.requests
    assert (b"authorization", b"Bearer " + SECRET.encode()) in request.headers
    raw = post(b"/v1/responses", b"Authorization: " + PLACEHOLDER.encode())  # no scheme
    outcome = broker(raw, entries, server_context(ca, "127.0.0.1"))
    ((request, _),) = outcome.requests
    assert b"authorization" not in dict(request.headers)


def test_only_entries_that_allow_the_request_put_their_value_in_it(ca, ca_file):
    def entries(port):
        upstream = f"https://127.0.0.1:{port}"
        return [
            entry(upstream, ca_file, paths=("/v1/",)),
            entry(upstream, ca_file, name="ADMIN", header="x-admin", value="admin-value",
                  placeholder="admin-placeholder", paths=("/admin/",)),
        ]  # fmt: skip

    raw = post(b"/v1/x", b"x-api-key: " + PLACEHOLDER.encode(), b"x-admin: admin-placeholder")
    outcome = broker(raw, entries, server_context(ca, "127.0.0.1"))
    ((request, _),) = outcome.requests
    assert dict(request.headers)[b"x-api-key"] == SECRET.encode()
    assert b"x-admin" not in dict(request.headers)  # its entry does not allow /v1/
    raw = post(b"/admin/x", b"x-api-key: " + PLACEHOLDER.encode(), b"x-admin: admin-placeholder")
    outcome = broker(raw, entries, server_context(ca, "127.0.0.1"))
    ((request, _),) = outcome.requests
    assert dict(request.headers)[b"x-admin"] == b"admin-value"
    assert b"x-api-key" not in dict(request.headers)


def test_response_hop_by_hop_headers_are_not_passed_back(ca, ca_file):
    async def answer(request, body, writer):
        writer.write(
            b"HTTP/1.1 201 Made\r\ncontent-length: 3\r\nkeep-alive: timeout=5\r\n"
            b"connection: keep-alive\r\nupgrade: h2\r\nx-request-id: r1\r\n\r\nnew"
        )

    outcome = broker(post(), local(ca_file), server_context(ca, "127.0.0.1"), answer)
    head = outcome.answer.partition(b"\r\n\r\n")[0]
    assert head.split(b"\r\n") == [
        b"HTTP/1.1 201 Made",
        b"content-length: 3",
        b"x-request-id: r1",
        b"connection: close",
    ]
    assert outcome.body == "new"


def test_an_answer_that_is_not_http_is_a_bad_gateway(ca, ca_file):
    async def answer(request, body, writer):
        writer.write(b"SMTP ready\r\n\r\n")

    outcome = broker(post(), local(ca_file), server_context(ca, "127.0.0.1"), answer)
    assert outcome.status == "HTTP/1.1 502 Bad Gateway"
    assert outcome.body.startswith(PROXY + "bad answer from 127.0.0.1:")
    assert outcome.violations == []


def test_an_answer_head_past_max_head_is_a_bad_gateway(ca, ca_file):
    async def answer(request, body, writer):
        writer.write(b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * 8 * egress.http.MAX_HEAD + b"\r\n\r\n")

    outcome = broker(post(), local(ca_file), server_context(ca, "127.0.0.1"), answer)
    port = request_port(outcome)
    assert (outcome.status, outcome.body) == (
        "HTTP/1.1 502 Bad Gateway",
        PROXY + f"bad answer from 127.0.0.1:{port}: Receive buffer too long\n",
    )


def test_an_informational_answer_is_not_passed_on(ca, ca_file):
    async def answer(request, body, writer):
        writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nfine")

    outcome = broker(post(), local(ca_file), server_context(ca, "127.0.0.1"), answer)
    assert outcome.answer == (
        b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nfine"
    )


def test_a_bad_answer_while_the_node_still_sends_its_body_is_a_bad_gateway(ca, ca_file):
    """The upstream answers garbage at once: the body the node is still sending is
    abandoned, and the node is told (the abandoned body must not swallow the answer)."""

    async def scenario():
        async def garbage(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"SMTP ready\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(
            garbage, "127.0.0.1", 0, ssl=server_context(ca, "127.0.0.1")
        )
        port = server.sockets[0].getsockname()[1]
        proxy = EgressProxy("t")
        directory = await proxy.open("n", [], local(ca_file)(port))
        reader, writer = await asyncio.open_unix_connection(str(directory / SOCKET_NAME))
        writer.write(
            f"POST /_broker/127.0.0.1:{port}/v1/x HTTP/1.1\r\nHost: x\r\n"
            "content-length: 100\r\n\r\npart".encode()
        )
        data = await asyncio.wait_for(reader.read(), 10)  # the node never sends the rest
        writer.close()
        await proxy.close()
        server.close()
        return port, answer_of(data)

    port, (line, body) = run(scenario())
    assert line == "HTTP/1.1 502 Bad Gateway"
    assert body.startswith(PROXY + f"bad answer from 127.0.0.1:{port}: ")


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (OSError(), "OSError"),
        (ValueError("v" * 300), "v" * 200),
        (h11.RemoteProtocolError("short"), "short"),
    ],
)
def test_errors_in_a_few_words(error, words):
    assert in_words(error) == words


def test_an_answer_cut_short_closes_the_nodes_connection(ca, ca_file):
    async def answer(request, body, writer):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort")

    outcome = broker(post(), local(ca_file), server_context(ca, "127.0.0.1"), answer)
    assert outcome.answer.endswith(b"\r\n\r\nshort")  # then closed: the node sees it short
    assert outcome.status == "HTTP/1.1 200 OK"


# --- refusals: violations of kind "broker", nothing sent upstream ------------------------------

HIDDEN = "the path has a percent-encoded '.', '/', '\\', '%' or control character"


@pytest.mark.parametrize(
    ("method", "path", "reason"),
    [
        (b"POST", b"/v2/messages", "the path is not under /v1/"),
        (b"POST", b"/v1", "the path is not under /v1/"),
        (b"POST", b"", "the path is not under /v1/"),
        (b"POST", b"?/v1/", "the path is not under /v1/"),
        (b"DELETE", b"/v1/files/f1", "the method is not one of GET, POST"),
        (b"PUT", b"/v1/files/f1", "the method is not one of GET, POST"),
        (b"post", b"/v1/files/f1", "the method is not one of GET, POST"),
        (b"POST", b"/v1/../admin", "the path has a '.' or '..' segment"),
        (b"POST", b"/v1/./messages", "the path has a '.' or '..' segment"),
        (b"POST", b"/v1/..", "the path has a '.' or '..' segment"),
        (b"POST", b"/v1/..;x=1/admin", "the path has a '.' or '..' segment"),
        (b"POST", b"/v1/.;/messages", "the path has a '.' or '..' segment"),
        (b"POST", b"/v1//admin", "the path has an empty segment (//)"),
        (b"POST", b"//v1/messages", "the path has an empty segment (//)"),
        (b"POST", b"/v1/\\..\\admin", "the path has a backslash"),
        (b"POST", b"/v1/%2e%2e/admin", HIDDEN),
        (b"POST", b"/v1/%2E%2E/admin", HIDDEN),
        (b"POST", b"/v1/..%2fadmin", HIDDEN),
        (b"POST", b"/v1/%2F", HIDDEN),
        (b"POST", b"/v1/%5cadmin", HIDDEN),
        (b"POST", b"/v1/%5C", HIDDEN),
        (b"POST", b"/v1/%252e%252e/admin", HIDDEN),
        (b"POST", b"/v1/%00", HIDDEN),
        (b"POST", b"/v1/%1f", HIDDEN),
        (b"POST", b"/v1/%0A", HIDDEN),
        (b"POST", b"/v1/%7f", HIDDEN),
        (b"POST", b"/v1/%zz", "the path has a malformed percent escape"),
        (b"POST", b"/v1/%2", "the path has a malformed percent escape"),
        (b"POST", b"/v1/x%", "the path has a malformed percent escape"),
        (b"POST", b"/v1/x#frag", "the path has a fragment"),
    ],
)
def test_paths_and_methods_outside_the_api_are_refused_as_violations(
    ca, ca_file, method, path, reason
):
    raw = post(path, b"x-api-key: " + PLACEHOLDER.encode()).replace(b"POST", method, 1)
    outcome = broker(raw, local(ca_file), server_context(ca, "127.0.0.1"))
    shown = (path.partition(b"?")[0] or b"/").decode()
    detail = f"node 'n' may not {method.decode()} {shown!r} on 127.0.0.1:{{port}}: {reason}"
    assert outcome.status == "HTTP/1.1 403 Forbidden"
    port = outcome.body.split("127.0.0.1:")[1].split(":")[0]
    assert outcome.body == PROXY + detail.format(port=port) + "\n"
    assert outcome.violations == [{"kind": "broker", "detail": detail.format(port=port)}]
    assert outcome.requests == [] and outcome.reports == []


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/v1/a b", "the path has a space, control or non-ASCII character"),
        ("/v1/\x00", "the path has a space, control or non-ASCII character"),
        ("/v1/\x1f", "the path has a space, control or non-ASCII character"),
        ("/v1/\x7f", "the path has a space, control or non-ASCII character"),
        ("/v1/é", "the path has a space, control or non-ASCII character"),
        ("/v1/messages", None),
        ("/v1/messages/", None),
        ("/v1/a.b/..c/c../.../%41%2d%7e", None),  # dots inside names, other escapes: fine
        ("/", None),
        ("/v1/x;y", None),
    ],
)
def test_unsafe_paths_h11_would_not_even_admit(path, reason):
    """h11 admits only visible ASCII in a target; the check does not rely on it."""
    assert unsafe(path) == reason


def test_the_path_shown_in_a_refusal_is_bounded():
    with pytest.raises(Refused) as raised:
        route(
            "n",
            [entry("https://a.example")],
            _request(b"GET", b"/_broker/a.example/v2/" + b"x" * 500),
        )
    assert str(raised.value) == (
        "node 'n' may not GET "
        + repr("/v2/" + "x" * 196)
        + " on a.example: the path is not under /v1/"
    )


def test_the_allowed_prefixes_and_methods_are_named_in_order():
    entries = [
        entry("https://a.example", paths=("/v2/", "/v1/"), methods=("POST",)),
        entry("https://a.example", name="B", paths=("/v1/",), methods=("PATCH", "GET")),
        entry("https://other.example", name="C", paths=("/v3/",), methods=("PUT",)),
    ]
    with pytest.raises(Refused) as raised:
        route("n", entries, _request(b"GET", b"/_broker/a.example/x"))
    assert str(raised.value).endswith(": the path is not under /v1/, /v2/")
    with pytest.raises(Refused) as raised:
        route("n", entries, _request(b"DELETE", b"/_broker/a.example/v1/x"))
    assert str(raised.value).endswith(": the method is not one of GET, PATCH, POST")
    with pytest.raises(Refused) as raised:
        route("n", entries, _request(b"PUT", b"/_broker/a.example/v2/x"))
    assert str(raised.value).endswith(": the method is not one of POST")
    assert raised.value.status == 403


def test_a_routed_request_keeps_its_query_and_names_its_upstream():
    entries = [entry("https://A.example:8443", paths=("/",), methods=("GET",))]
    routed = route("n", entries, _request(b"GET", b"/_broker/a.example:8443?x=1"))
    assert routed.target == Grant("a.example", 8443) and routed.authority == "a.example:8443"
    assert routed.entries == tuple(entries)
    assert routed.request.target == b"/?x=1" and routed.request.method == b"GET"
    assert routed.request.headers[0] == (b"host", b"a.example:8443")
    routed = route("n", entries, _request(b"GET", b"/_broker/A.EXAMPLE:8443/p?q=/../"))
    assert routed.request.target == b"/p?q=/../"  # query strings pass through


@pytest.mark.parametrize(
    "target",
    [
        b"/_broker/other.example/v1/messages",
        b"/_broker/127.0.0.1/v1/messages",  # the right host, not the right port
        b"/_broker//v1/messages",
        b"/_broker/",
    ],
)
def test_a_host_that_is_not_a_brokered_upstream_is_refused(target):
    outcome = broker(
        b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        lambda port: [entry("https://127.0.0.1:8443"), entry("https://api.example", name="B")],
    )
    host = target[len(b"/_broker/") :].partition(b"/")[0].decode()
    detail = f"{host!r} is not a brokered upstream of node 'n'"
    assert (outcome.status, outcome.body) == ("HTTP/1.1 403 Forbidden", PROXY + detail + "\n")
    assert outcome.violations == [{"kind": "broker", "detail": detail}]


def test_a_node_without_brokered_secrets_has_no_broker():
    outcome = broker(b"GET /_broker/api.example/v1/x HTTP/1.1\r\nHost: x\r\n\r\n", lambda _: [])
    detail = "'api.example' is not a brokered upstream of node 'n'"
    assert outcome.violations == [{"kind": "broker", "detail": detail}]


def test_the_host_shown_in_a_refusal_is_bounded():
    with pytest.raises(Refused) as raised:
        route("n", [], _request(b"GET", b"/_broker/" + b"h" * 300 + b"/v1/"))
    assert str(raised.value) == f"{'h' * 100!r} is not a brokered upstream of node 'n'"


# --- the upstream: verified TLS to a checked address ---------------------------------------------


def reported_target(outcome: Outcome) -> str:
    ((node, target, _),) = outcome.reports
    assert node == "n"
    return target


@pytest.mark.parametrize(
    ("issued", "why"),
    [
        ("other-ca", "certificate verify failed: unable to get local issuer certificate"),
        ("expired", "certificate verify failed: certificate has expired"),
        ("localhost", "certificate verify failed: IP address mismatch, certificate is not valid "
                      "for '127.0.0.1'."),
    ],
)  # fmt: skip
def test_a_certificate_that_does_not_verify_is_a_bad_gateway_and_reported(ca, ca_file, issued, why):
    if issued == "other-ca":
        context = server_context(trustme.CA(), "127.0.0.1")
    elif issued == "expired":
        past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
        context = server_context(
            ca, "127.0.0.1", not_before=past, not_after=past + datetime.timedelta(days=1)
        )
    else:
        context = server_context(ca, "localhost")
    outcome = broker(post(b"/v1/x", b"x-api-key: " + PLACEHOLDER.encode()), local(ca_file), context)
    target = reported_target(outcome)
    assert outcome.reports == [("n", target, why)]
    assert (outcome.status, outcome.body) == (
        "HTTP/1.1 502 Bad Gateway", PROXY + f"cannot connect to {target}: {why}\n"
    )  # fmt: skip
    assert outcome.requests == [] and outcome.violations == []


def test_a_name_is_verified_against_the_certificate_and_reached_at_its_checked_address(ca, ca_file):
    resolver = Resolver(["127.0.0.1"])
    entries = lambda port: [entry(f"https://api.example:{port}", ca_file)]  # noqa: E731
    raw = post(b"/v1/x", b"x-api-key: " + PLACEHOLDER.encode())
    raw = raw.replace(b"/_broker/127.0.0.1:PORT", b"/_broker/api.example:PORT")
    good = broker(
        raw, entries, server_context(ca, "api.example"), resolver=resolver,
        allowed_address=lambda address: True,
    )  # fmt: skip
    assert good.status == "HTTP/1.1 200 OK"
    ((request, _),) = good.requests
    assert dict(request.headers)[b"host"] == f"api.example:{request_port(good)}".encode()
    assert resolver.asked == [("api.example", request_port(good))]
    wrong = broker(
        raw, entries, server_context(ca, "other.example"), resolver=resolver,
        allowed_address=lambda address: True,
    )  # fmt: skip
    why = (
        "certificate verify failed: Hostname mismatch, certificate is not valid for 'api.example'."
    )
    assert wrong.status == "HTTP/1.1 502 Bad Gateway"
    assert wrong.reports == [("n", reported_target(wrong), why)]


def test_a_name_resolving_to_a_private_address_is_refused_as_a_violation(ca, ca_file):
    resolver = Resolver(["10.0.0.1"])
    entries = lambda port: [entry("https://api.example", ca_file)]  # noqa: E731
    raw = b"POST /_broker/api.example/v1/x HTTP/1.1\r\nHost: x\r\ncontent-length: 0\r\n\r\n"
    outcome = broker(raw, entries, resolver=resolver)
    detail = "api.example resolves to a non-public address (10.0.0.1): refused"
    assert (outcome.status, outcome.body) == ("HTTP/1.1 403 Forbidden", PROXY + detail + "\n")
    assert outcome.violations == [{"kind": "broker", "detail": detail}]
    assert outcome.reports == [] and resolver.asked == [("api.example", 443)]


def test_a_name_that_does_not_resolve_is_reported_as_unreachable():
    resolver = Resolver(error=socket.gaierror(-2, "Name or service not known"))
    entries = lambda port: [entry("https://api.example")]  # noqa: E731
    raw = b"GET /_broker/api.example/v1/x HTTP/1.1\r\nHost: x\r\n\r\n"
    outcome = broker(raw, entries, resolver=resolver)
    assert outcome.status == "HTTP/1.1 502 Bad Gateway"
    assert outcome.body == (
        PROXY + "api.example does not resolve: [Errno -2] Name or service not known\n"
    )
    assert outcome.reports == [
        ("n", "api.example:443", "api.example does not resolve (Name or service not known)")
    ]
    assert outcome.violations == []


def test_an_upstream_that_is_down_is_a_bad_gateway_and_reported():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    entries = lambda _: [entry(f"https://127.0.0.1:{port}")]  # noqa: E731
    raw = f"GET /_broker/127.0.0.1:{port}/v1/x HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    outcome = broker(raw, entries)
    assert (outcome.status, outcome.body) == (
        "HTTP/1.1 502 Bad Gateway",
        PROXY + f"cannot connect to 127.0.0.1:{port}: connection refused\n",
    )
    assert outcome.reports == [("n", f"127.0.0.1:{port}", "connection refused")]
    assert outcome.violations == []


def test_a_ca_bundle_that_cannot_be_read_is_reported(tmp_path):
    missing = str(tmp_path / "missing.pem")
    entries = lambda _: [entry("https://127.0.0.1:8443", missing)]  # noqa: E731
    raw = b"GET /_broker/127.0.0.1:8443/v1/x HTTP/1.1\r\nHost: x\r\n\r\n"
    outcome = broker(raw, entries)
    why = "cannot load the CA bundle: no such file or directory"
    assert outcome.reports == [("n", "127.0.0.1:8443", why)]
    assert (outcome.status, outcome.body) == (
        "HTTP/1.1 502 Bad Gateway", PROXY + f"cannot connect to 127.0.0.1:8443: {why}\n"
    )  # fmt: skip


def test_the_tls_context_verifies_and_refuses_old_protocols(ca_file):
    context = tls_context(ca_file)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert tls_context(ca_file) is context  # loaded once
    assert tls_context(None).verify_mode == ssl.CERT_REQUIRED  # the system trust store


def test_tls_failures_in_a_few_words():
    verify = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] long")
    verify.verify_message = "certificate has expired"
    assert why_tls(verify) == "certificate verify failed: certificate has expired"
    handshake = ssl.SSLError(1, "[SSL] x")
    handshake.reason = "TLSV1_ALERT_PROTOCOL_VERSION"
    assert why_tls(handshake) == "TLS handshake failed: tlsv1_alert_protocol_version"
    assert why_tls(ssl.SSLError(1, "Odd")) == "TLS handshake failed: odd"
    assert why_tls(ConnectionRefusedError(111, "Connection refused")) is None


def test_an_upstream_that_does_not_speak_tls_is_a_bad_gateway_and_reported(ca_file):
    async def scenario():
        async def plain(reader, writer):
            writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(plain, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reports = []
        proxy = EgressProxy("t", on_unreachable=lambda *report: reports.append(report))
        directory = await proxy.open("n", [], [entry(f"https://127.0.0.1:{port}", ca_file)])
        data = await exchange(
            directory, f"GET /_broker/127.0.0.1:{port}/v1/x HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        )
        await proxy.close()
        server.close()
        return port, answer_of(data), reports

    port, answer, reports = run(scenario())
    why = "TLS handshake failed: wrong_version_number"
    assert reports == [("n", f"127.0.0.1:{port}", why)]
    assert answer == (
        "HTTP/1.1 502 Bad Gateway",
        PROXY + f"cannot connect to 127.0.0.1:{port}: {why}\n",
    )


@pytest.mark.parametrize(
    ("head", "sent", "status", "detail"),
    [
        (b"content-length: 10", b"abc", "400 Bad Request", "the request ended before its body did"),
        (b"transfer-encoding: chunked", b"zz\r\n", "400 Bad Request", "bad request body: "),
    ],
)
def test_a_request_body_cut_short_or_malformed_never_completes_upstream(
    ca, ca_file, head, sent, status, detail
):
    async def scenario():
        upstream = await Upstream(server_context(ca, "127.0.0.1")).start()
        proxy = EgressProxy("t")
        directory = await proxy.open("n", [], local(ca_file)(upstream.port))
        reader, writer = await asyncio.open_unix_connection(str(directory / SOCKET_NAME))
        writer.write(
            f"POST /_broker/127.0.0.1:{upstream.port}/v1/x HTTP/1.1\r\nHost: x\r\n".encode()
            + head
            + b"\r\n\r\n"
            + sent
        )
        writer.write_eof()  # the node sends no more
        data = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        violations = proxy.violations("n")
        await proxy.close()
        upstream.close()
        return answer_of(data), upstream.requests, violations

    (line, body), requests, violations = run(scenario())
    assert line == f"HTTP/1.1 {status}" and body.startswith(PROXY + detail)
    assert requests == [] and violations == []


def test_the_value_is_in_no_answer_violation_report_or_log(ca, ca_file, caplog):
    """Every way a broker request can fail, with the real value configured: it appears
    nowhere the node, the run's results or its logs could see."""
    caplog.set_level("DEBUG")
    context = server_context(ca, "127.0.0.1")
    placeholder = b"x-api-key: " + PLACEHOLDER.encode()
    outcomes = [
        broker(post(b"/v2/x", placeholder), local(ca_file), context),
        broker(post(b"/v1/%2e%2e/x", placeholder), local(ca_file), context),
        broker(post(b"/v1/x", placeholder).replace(b"POST", b"PUT", 1), local(ca_file), context),
        broker(
            post(b"/v1/x", placeholder), local(ca_file), server_context(trustme.CA(), "127.0.0.1")
        ),
        broker(post(b"/v1/x", placeholder), lambda _: [entry("https://127.0.0.1:1", ca_file)]),
        broker(post(b"/v1/x", placeholder), lambda _: [entry("https://api.example", ca_file)]),
    ]
    seen = repr([(o.answer, o.violations, o.reports) for o in outcomes]) + caplog.text
    assert SECRET not in seen
    assert [o.status for o in outcomes] == [
        "HTTP/1.1 403 Forbidden", "HTTP/1.1 403 Forbidden", "HTTP/1.1 403 Forbidden",
        "HTTP/1.1 502 Bad Gateway", "HTTP/1.1 502 Bad Gateway", "HTTP/1.1 403 Forbidden",
    ]  # fmt: skip


def test_the_broker_leaves_grants_and_other_requests_as_they_were():
    """A node with brokered secrets and grants: CONNECT to a grant still splices; a request
    to the local proxy outside the broker prefix is an ordinary, ungranted target."""

    async def scenario():
        async def echo(reader, writer):
            writer.write(await reader.read(100))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        proxy = EgressProxy("t")
        directory = await proxy.open("n", [f"127.0.0.1:{port}"], [entry("https://api.example")])
        spliced = await exchange(
            directory, f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: x\r\n\r\nhello".encode()
        )
        other = await exchange(
            directory, b"GET http://127.0.0.1:3128/v1/x HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        violations = proxy.violations("n")
        await proxy.close()
        server.close()
        return spliced, answer_of(other), violations

    spliced, other, violations = run(scenario())
    assert spliced == b"HTTP/1.1 200 Connection Established\r\n\r\nhello"
    detail = "127.0.0.1:3128 is not granted to node 'n'"
    assert other == ("HTTP/1.1 403 Forbidden", PROXY + detail + "\n")
    assert violations == [{"kind": "egress", "detail": detail}]
