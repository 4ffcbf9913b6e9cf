"""Brokered secrets, over real sockets (no engine): a node's request to its broker reaches a
local TLS upstream (a trustme CA) with the real key in place of the placeholder; every
refusal is exact; bad certificates, dead upstreams and private addresses are refused."""

from __future__ import annotations

import asyncio
import datetime
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
    route,
    tls_context,
    unsafe,
    upstream_headers,
    upstream_of,
    why_tls,
)
from sandbox_orch.egress.grants import Grant
from sandbox_orch.egress.http import Refused

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
    port: int = 0

    async def start(self) -> Upstream:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader, writer):
        connection = h11.Connection(h11.SERVER)
        request, body = None, b""
        try:
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    connection.receive_data(await reader.read(65536))
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:
                    return
            self.requests.append((request, body))
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


async def ask(directory, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(directory / SOCKET_NAME))
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data


def answer_of(data: bytes) -> tuple[str, str]:
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), body.decode()


@dataclass
class Outcome:
    answer: bytes
    violations: list[dict[str, str]]
    reports: list[tuple[str, str, str]]
    requests: list[tuple[h11.Request, bytes]]

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
        data = await ask(directory, raw.replace(b"PORT", str(port).encode()))
        violations = proxy.violations("n")
        await proxy.close()
        if upstream is not None:
            upstream.close()
        return Outcome(data, violations, reports, upstream.requests if upstream else [])

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
    assert base_url("https://api.anthropic.com") == "http://127.0.0.1:3128/_broker/api.anthropic.com"
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


def test_a_node_with_only_brokered_secrets_gets_its_socket():
    made = entry("https://a.example")
    node = _opened_node(made)
    assert node.grants == frozenset() and node.brokered == (made,)


# --- the exchange -----------------------------------------------------------------------------


def test_the_real_key_reaches_the_upstream_in_its_header_and_the_placeholder_does_not(
    ca, ca_file
):
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
    assert list(request.headers) == [
        (b"host", b"127.0.0.1:" + str(request_port(outcome)).encode()),
        (b"x-api-key", SECRET.encode()),
        (b"anthropic-version", b"2023-06-01"),
        (b"content-length", b"14"),
        (b"connection", b"close"),
    ]
    assert outcome.violations == [] and outcome.reports == []


def request_port(outcome: Outcome) -> int:
    ((request, _),) = outcome.requests
    host = dict(request.headers)[b"host"]
    return int(host.rpartition(b":")[2])
