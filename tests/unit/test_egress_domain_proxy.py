"""The egress proxy with suffix grants and private-name opt-ins, over real Unix and
loopback sockets with an injected resolver (no DNS, no engine): a name is matched as the
client asked for it, before any resolution; every resolved name still meets the
non-public-address rule unless the policy opted that exact name in."""

from __future__ import annotations

import asyncio

import pytest

from sandbox_orch.egress import SOCKET_NAME, EgressProxy

from .proxytalk import LOOPBACK_2, Resolver, answer_of, echo_server, exchange
from .test_egress_refusals import PROXY, run

SUFFIX = "*.githubusercontent.com:443"


def ask(raw: bytes, grants: list[str], resolver: Resolver, **options):
    async def scenario():
        proxy = EgressProxy("t", resolver=resolver, **options)
        directory = await proxy.open("n", grants)
        data = await exchange(directory, raw)
        violations = proxy.violations("n")
        await proxy.close()
        return answer_of(data), violations

    return run(scenario())


@pytest.mark.parametrize(
    ("raw", "status", "detail"),
    [
        (b"CONNECT evilgithubusercontent.com:443 HTTP/1.1\r\nHost: x\r\n\r\n", "403 Forbidden",
         "evilgithubusercontent.com:443 is not granted to node 'n'"),
        (b"CONNECT githubusercontent.com:443 HTTP/1.1\r\nHost: x\r\n\r\n", "403 Forbidden",
         "githubusercontent.com:443 is not granted to node 'n' "
         "(*.githubusercontent.com matches names below it only)"),
        (b"CONNECT GitHubUserContent.com.:443 HTTP/1.1\r\nHost: x\r\n\r\n", "403 Forbidden",
         "githubusercontent.com:443 is not granted to node 'n' "
         "(*.githubusercontent.com matches names below it only)"),
        (b"CONNECT raw.githubusercontent.com:80 HTTP/1.1\r\nHost: x\r\n\r\n", "403 Forbidden",
         "raw.githubusercontent.com:80 is not granted to node 'n'"),
        (b"CONNECT raw.githubusercontent.com.evil.example:443 HTTP/1.1\r\nHost: x\r\n\r\n",
         "403 Forbidden", "raw.githubusercontent.com.evil.example:443 is not granted to node 'n'"),
        (b"GET http://raw.githubusercontent.com/x HTTP/1.1\r\nHost: x\r\n\r\n", "403 Forbidden",
         "raw.githubusercontent.com:80 is not granted to node 'n'"),
        (b"CONNECT a_b.githubusercontent.com:443 HTTP/1.1\r\nHost: x\r\n\r\n", "400 Bad Request",
         "refused: 'a_b.githubusercontent.com' is not a valid host name (IDNA: Codepoint "
         "U+005F at position 2 of 'a_b' not allowed)"),
        (b"CONNECT *.githubusercontent.com:443 HTTP/1.1\r\nHost: x\r\n\r\n", "400 Bad Request",
         "refused: '*.githubusercontent.com' is not a valid host name (IDNA: Codepoint "
         "U+002A at position 1 of '*' not allowed)"),
        (b"CONNECT a..githubusercontent.com:443 HTTP/1.1\r\nHost: x\r\n\r\n", "400 Bad Request",
         "refused: 'a..githubusercontent.com' is not a valid host name (IDNA: Empty Label)"),
    ],
)  # fmt: skip
def test_names_outside_a_suffix_grant_are_refused_before_resolution(raw, status, detail):
    resolver = Resolver(["93.184.216.34"])
    (line, body), violations = ask(raw, [SUFFIX], resolver)
    assert line == f"HTTP/1.1 {status}"
    assert body == PROXY + detail + "\n"
    assert violations == [{"kind": "egress", "detail": detail}]
    assert resolver.asked == []  # refused on the name asked for: nothing was resolved


@pytest.mark.parametrize(
    ("target", "resolved"),
    [
        (b"raw.githubusercontent.com", "raw.githubusercontent.com"),
        (b"A.B.GitHubUserContent.COM.", "a.b.githubusercontent.com"),
    ],
)
def test_a_name_under_the_suffix_is_resolved_normalised_and_still_needs_a_public_address(
    target, resolved
):
    resolver = Resolver(["10.0.0.7"])
    raw = b"CONNECT " + target + b":443 HTTP/1.1\r\nHost: x\r\n\r\n"
    (line, body), violations = ask(raw, [SUFFIX], resolver)
    assert resolver.asked == [(resolved, 443)]
    detail = f"{resolved} resolves to a non-public address (10.0.0.7): refused"
    assert (line, body) == ("HTTP/1.1 403 Forbidden", PROXY + detail + "\n")
    assert violations == [{"kind": "egress", "detail": detail}]


def test_punycode_asked_matches_a_unicode_grant_and_resolves_the_a_label():
    resolver = Resolver(["10.0.0.7"])
    raw = b"CONNECT Shop.XN--BCHER-KVA.example:443 HTTP/1.1\r\nHost: x\r\n\r\n"
    ask(raw, ["*.bücher.example:443"], resolver)
    assert resolver.asked == [("shop.xn--bcher-kva.example", 443)]


def through(target: str, grants, resolver, private_names=(), allowed_address=None):
    """CONNECT `target`:<echo port> and send a line: (status head, echoed, violations).
    `{port}` in a grant or private name is the echo server's port."""

    async def scenario():
        server = await echo_server()
        port = server.sockets[0].getsockname()[1]
        options = {"allowed_address": allowed_address} if allowed_address else {}
        private = [name.format(port=port) for name in private_names]
        proxy = EgressProxy("t", resolver=resolver, private_names=private, **options)
        directory = await proxy.open("n", [g.format(port=port) for g in grants])
        reader, writer = await asyncio.open_unix_connection(str(directory / SOCKET_NAME))
        writer.write(f"CONNECT {target}:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        echoed = b""
        if head.startswith(b"HTTP/1.1 200"):
            writer.write(b"hello")
            await writer.drain()
            echoed = await reader.readexactly(5)
        writer.close()
        violations = proxy.violations("n")
        await proxy.close()
        server.close()
        return head, echoed, violations

    return run(scenario())


def test_a_name_under_a_suffix_grant_goes_through_to_the_address_it_resolved():
    # Every address allowed: the loopback echo server stands in for a public host (the
    # address rule is tested on its own above).
    resolver = Resolver([LOOPBACK_2])
    head, echoed, violations = through(
        "Pkg.Build.Example.", ["*.build.example:{port}"], resolver, allowed_address=lambda _: True
    )
    assert head == b"HTTP/1.1 200 Connection Established\r\n\r\n"
    assert echoed == b"HELLO" and violations == []
    assert resolver.asked[0][0] == "pkg.build.example"


# --- network.private_names ---------------------------------------------------------------


def test_an_opted_in_name_may_resolve_to_a_private_or_loopback_address():
    resolver = Resolver([LOOPBACK_2])
    head, echoed, violations = through(
        "Mirror.Corp.Example.",
        ["*.corp.example:{port}"],
        resolver,
        private_names=["mirror.corp.example:{port}"],
    )
    assert head == b"HTTP/1.1 200 Connection Established\r\n\r\n"
    assert echoed == b"HELLO" and violations == []


def test_another_name_under_the_same_suffix_is_not_opted_in():
    resolver = Resolver([LOOPBACK_2])
    head, _, violations = through(
        "other.corp.example",
        ["*.corp.example:{port}"],
        resolver,
        private_names=["mirror.corp.example:{port}"],
    )
    detail = f"other.corp.example resolves to a non-public address ({LOOPBACK_2}): refused"
    assert head.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert violations == [{"kind": "egress", "detail": detail}]


def test_the_opt_in_is_for_its_port_only():
    resolver = Resolver([LOOPBACK_2])
    head, _, violations = through(
        "mirror.corp.example",
        ["*.corp.example:{port}"],
        resolver,
        private_names=["mirror.corp.example:1"],
    )
    assert head.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert "resolves to a non-public address" in violations[0]["detail"]


@pytest.mark.parametrize(
    "answer",
    [["169.254.169.254"], ["10.0.0.1", "169.254.169.254"], ["fe80::1"], ["0.0.0.0"], []],
)
def test_an_opted_in_name_never_reaches_link_local_or_unspecified_addresses(answer):
    resolver = Resolver(answer)
    raw = b"CONNECT mirror.corp.example:443 HTTP/1.1\r\nHost: x\r\n\r\n"
    (line, body), violations = ask(
        raw, ["mirror.corp.example:443"], resolver, private_names=["mirror.corp.example:443"]
    )
    bad = ", ".join(a for a in answer if a != "10.0.0.1")
    detail = (
        "mirror.corp.example resolves to an address network.private_names does not open "
        f"({bad}): refused"
    )
    assert (line, body) == ("HTTP/1.1 403 Forbidden", PROXY + detail + "\n")
    assert violations == [{"kind": "egress", "detail": detail}]


def test_private_names_are_normalised_like_grants():
    resolver = Resolver([LOOPBACK_2])
    head, echoed, _ = through(
        "mirror.corp.example",
        ["mirror.corp.example:{port}"],
        resolver,
        private_names=["MIRROR.Corp.Example.:{port}"],
    )
    assert head == b"HTTP/1.1 200 Connection Established\r\n\r\n" and echoed == b"HELLO"
