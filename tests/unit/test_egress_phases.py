"""The setup phase at the proxy, over real Unix and loopback sockets (no engine): setup's
grants until the flip and never after, the broker closed during setup, every open
connection cut by the flip, one flip only, and each phase's violations kept apart."""

from __future__ import annotations

import asyncio

import h11
import pytest

from sandbox_orch.egress import SOCKET_NAME, EgressProxy, Refused
from sandbox_orch.egress.phases import flip_exit_code, is_phase_request

from .proxytalk import LOOPBACK_2, answer_of, echo_server, exchange
from .test_egress_refusals import PROXY, run


def flip(code: int | str = 0) -> bytes:
    return (
        f"POST /_phase/setup-ended/{code} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode()
    )


async def connect(directory, port: int):
    """CONNECT to the echo server: (status line, reader, writer)."""
    reader, writer = await asyncio.open_unix_connection(str(directory / SOCKET_NAME))
    writer.write(f"CONNECT {LOOPBACK_2}:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return head.split(b"\r\n")[0].decode(), reader, writer


async def echoed(directory, port: int) -> str:
    line, reader, writer = await connect(directory, port)
    if line.startswith("HTTP/1.1 200"):
        writer.write(b"hi")
        await writer.drain()
        line += " " + (await asyncio.wait_for(reader.readexactly(2), 5)).decode()
    writer.close()
    return line


def refused_line(port: int, phase: str = "") -> str:
    return f"{LOOPBACK_2}:{port} is not granted to node 'n'{phase}"


def test_setup_grants_apply_until_the_flip_and_the_nodes_own_after_it():
    async def scenario():
        setup_server, own_server = await echo_server(), await echo_server()
        setup_port = setup_server.sockets[0].getsockname()[1]
        own_port = own_server.sockets[0].getsockname()[1]
        proxy = EgressProxy("t")
        directory = await proxy.open(
            "n", [f"{LOOPBACK_2}:{own_port}"], setup=[f"{LOOPBACK_2}:{setup_port}"]
        )
        before = await echoed(directory, setup_port), await echoed(directory, own_port)
        flipped = answer_of(await exchange(directory, flip(0)))
        after = await echoed(directory, setup_port), await echoed(directory, own_port)
        phase = proxy.setup_phase("n")
        violations = proxy.violations("n")
        await proxy.close()
        setup_server.close()
        own_server.close()
        return setup_port, own_port, before, flipped, after, phase, violations

    setup_port, own_port, before, flipped, after, phase, violations = run(scenario())
    assert before == ("HTTP/1.1 200 Connection Established HI", "HTTP/1.1 403 Forbidden")
    assert flipped == ("HTTP/1.1 200 OK", "")
    assert after == ("HTTP/1.1 403 Forbidden", "HTTP/1.1 200 Connection Established HI")
    assert phase.ended and phase.exit_code == 0 and phase.ended_at is not None
    assert not phase.flipped_again
    # Each phase's refusals are its own: setup's in the phase, the command's in the node's.
    assert phase.violations == [
        {"kind": "egress", "detail": refused_line(own_port, " during setup")}
    ]
    assert violations == [{"kind": "egress", "detail": refused_line(setup_port)}]


def test_the_flip_closes_every_connection_opened_before_it():
    async def scenario():
        server = await echo_server()
        port = server.sockets[0].getsockname()[1]
        proxy = EgressProxy("t")
        directory = await proxy.open("n", [], setup=[f"{LOOPBACK_2}:{port}"])
        line, reader, writer = await connect(directory, port)
        writer.write(b"ab")
        await writer.drain()
        first = await asyncio.wait_for(reader.readexactly(2), 5)
        await exchange(directory, flip(3))
        rest = await asyncio.wait_for(reader.read(), 5)  # EOF: the flip cut it
        left = len(proxy.nodes["n"].connections)
        writer.close()
        code = proxy.setup_phase("n").exit_code
        await proxy.close()
        server.close()
        return line, first, rest, left, code

    line, first, rest, left, code = run(scenario())
    assert (line, first) == ("HTTP/1.1 200 Connection Established", b"AB")
    assert rest == b""
    assert left == 0
    assert code == 3


def ask_all(requests: list[bytes], setup: list[str] | None):
    async def scenario():
        proxy = EgressProxy("t")
        directory = await proxy.open("n", [], setup=setup)
        answers = [answer_of(await exchange(directory, raw)) for raw in requests]
        phase = proxy.setup_phase("n")
        violations = proxy.violations("n")
        await proxy.close()
        return answers, phase, violations

    return run(scenario())


BROKER = (
    b"POST /_broker/api.example.com/v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
)


def test_the_broker_is_closed_during_setup():
    answers, phase, violations = ask_all([BROKER], setup=[])
    detail = "the broker is closed until setup ends"
    assert answers == [("HTTP/1.1 403 Forbidden", PROXY + detail + "\n")]
    assert not phase.ended  # never flipped: its refusals are setup's all the same
    assert phase.violations == [{"kind": "broker", "detail": detail}]
    assert violations == []


def test_after_the_flip_the_broker_routes_as_usual():
    answers, _, violations = ask_all([flip(0), BROKER], setup=[])
    detail = "'api.example.com' is not a brokered upstream of node 'n'"  # as without setup
    assert answers[1] == ("HTTP/1.1 403 Forbidden", PROXY + detail + "\n")
    assert violations == [{"kind": "broker", "detail": detail}]


def test_a_second_flip_is_refused_and_recorded():
    answers, phase, violations = ask_all([flip(0), flip(0)], setup=[])
    detail = "the setup phase has already ended"
    assert answers == [("HTTP/1.1 200 OK", ""), ("HTTP/1.1 403 Forbidden", PROXY + detail + "\n")]
    assert phase.flipped_again and phase.exit_code == 0
    assert phase.violations == []
    assert violations == [{"kind": "phase", "detail": detail}]


def test_a_node_without_setup_cannot_flip():
    answers, phase, violations = ask_all([flip(0)], setup=None)
    detail = "node 'n' has no setup phase"
    assert answers == [("HTTP/1.1 403 Forbidden", PROXY + detail + "\n")]
    assert phase is None
    assert violations == [{"kind": "phase", "detail": detail}]


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b"GET /_phase/setup-ended/0 HTTP/1.1\r\nHost: x\r\n\r\n", "GET /_phase/setup-ended/0"),
        (flip(256), "POST /_phase/setup-ended/256"),
        (flip(1000), "POST /_phase/setup-ended/1000"),
        (flip("01"), "POST /_phase/setup-ended/01"),
        (flip("-1"), "POST /_phase/setup-ended/-1"),
        (flip(""), "POST /_phase/setup-ended/"),
        (flip("0/x"), "POST /_phase/setup-ended/0/x"),
        (b"POST /_phase/other HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
         "POST /_phase/other"),
    ],
)  # fmt: skip
def test_a_bad_phase_request_is_refused_and_does_not_flip(raw, shown):
    answers, phase, violations = ask_all([raw], setup=[])
    detail = f"bad phase request {shown}"
    assert answers == [("HTTP/1.1 400 Bad Request", PROXY + detail + "\n")]
    assert not phase.ended and phase.exit_code is None
    assert phase.violations == [{"kind": "phase", "detail": detail}]
    assert violations == []


def test_a_bad_phase_request_is_quoted_up_to_100_characters():
    target = "/_phase/" + "x" * 92
    request = h11.Request(method="POST", target=target + "yz", headers=[("host", "x")])
    with pytest.raises(Refused) as raised:
        flip_exit_code(request)
    assert str(raised.value) == f"bad phase request POST {target}"
    assert len(target) == 100


@pytest.mark.parametrize("code", [0, 1, 9, 10, 99, 100, 255])
def test_every_exit_code_from_0_to_255_is_read(code):
    request = h11.Request(
        method="POST", target=f"/_phase/setup-ended/{code}", headers=[("host", "x")]
    )
    assert is_phase_request(request)
    assert flip_exit_code(request) == code


def test_only_the_phase_prefix_is_a_phase_request():
    def request(target: str) -> h11.Request:
        return h11.Request(method="POST", target=target, headers=[("host", "x")])

    assert not is_phase_request(request("/_phasex/setup-ended/0"))
    assert not is_phase_request(request("http://h/_phase/setup-ended/0"))
    with pytest.raises(Refused) as raised:
        flip_exit_code(request("/_phase/setup-ended/00"))
    assert raised.value.status == 400


def test_each_attempt_starts_in_setup_again_with_its_own_violations():
    async def scenario():
        proxy = EgressProxy("t")
        directory = await proxy.open("n", [], setup=[])
        await exchange(directory, BROKER)
        await exchange(directory, flip(2))
        await exchange(directory, flip(2))  # the command's violation (attempt 1)
        first = proxy.setup_phase("n")
        again = await proxy.open("n", [], setup=[])
        await exchange(directory, BROKER)
        second = proxy.setup_phase("n")
        violations = proxy.violations("n")
        await proxy.close()
        return directory, again, first, second, violations

    directory, again, first, second, violations = run(scenario())
    assert again == directory
    closed = {"kind": "broker", "detail": "the broker is closed until setup ends"}
    assert first.exit_code == 2 and first.violations == [closed]
    assert second is not first and not second.ended
    assert second.violations == [closed]
    assert violations == [{"kind": "phase", "detail": "the setup phase has already ended"}]


def test_an_unknown_node_has_no_setup_phase():
    async def scenario():
        proxy = EgressProxy("t")
        await proxy.open("n", [])
        phases = proxy.setup_phase("n"), proxy.setup_phase("other")
        await proxy.close()
        return phases

    assert run(scenario()) == (None, None)


def test_the_flip_answers_exactly_and_setup_keeps_every_refusal_read_before_it():
    async def scenario():
        proxy = EgressProxy("t")
        directory = await proxy.open("n", [], setup=[])
        await exchange(directory, BROKER)
        early = list(proxy.setup_phase("n").violations)  # read while setup still runs
        await exchange(directory, BROKER)
        answer = await exchange(directory, flip(0))
        phase = proxy.setup_phase("n")
        await proxy.close()
        return early, answer, phase

    early, answer, phase = run(scenario())
    closed = {"kind": "broker", "detail": "the broker is closed until setup ends"}
    assert early == [closed]
    assert answer == b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    assert phase.violations == [closed, closed]
