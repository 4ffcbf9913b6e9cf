"""Kubernetes egress on the real engine, without a cluster: the proxy pod's image running
its proxy (egress/remote.py), and nodes from our images whose `sandbox-orch-egress`
reaches it over mutual TLS, as they would across a pod network. Here that network is an
internal Docker network, under runc (gVisor containers cannot join Docker networks on
this machine); the proxy is driven over its attached stdin and stdout, as the backend
drives it over the exec API. The certificates come from a real run CA."""

from __future__ import annotations

import json
import socket
import struct
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sandbox_orch.egress.identity import Credential, RunAuthority
from sandbox_orch.images import image_ref

pytestmark = [pytest.mark.engine, pytest.mark.timeout(300)]
LABELS = {"sandbox-orch.test": "egress-pod"}
HARDENED: dict[str, Any] = {
    "user": "10001:10001",
    "read_only": True,
    "tmpfs": {"/tmp": "rw,noexec,nosuid,nodev,size=16m"},
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
    "runtime": "runc",
    "labels": LABELS,
}
FETCH = r"""
import sys, urllib.error, urllib.request
for url in sys.argv[1:]:
    try:
        print(urllib.request.urlopen(url, timeout=20).status)
    except urllib.error.HTTPError as error:
        print(error.code)
    except OSError as error:
        print(type(error).__name__)
"""


class Control:
    """The proxy's stdin and stdout through the engine's attach stream."""

    def __init__(self, client: Any, container: Any) -> None:
        params = {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
        self._socket = client.api.attach_socket(container.id, params=params)._sock
        self._socket.settimeout(30)
        self._buffer = b""
        self._ids = 0

    def ask(self, **request: Any) -> dict[str, Any]:
        self._ids += 1
        self._socket.sendall(json.dumps({**request, "id": self._ids}).encode() + b"\n")
        while True:
            message = json.loads(self._line())
            if message.get("id") == self._ids:
                return message

    def _line(self) -> bytes:
        while b"\n" not in self._buffer:
            header = self._exactly(8)  # the engine's frame: stream, 3 zeros, length
            stream, size = header[0], struct.unpack(">I", header[4:])[0]
            payload = self._exactly(size)
            if stream == 1:
                self._buffer += payload
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self._socket.recv(size - len(data))
            if not chunk:
                raise ConnectionError("the proxy's attach stream ended")
            data += chunk
        return data

    def close(self) -> None:
        self._socket.close()


@dataclass
class Pod:
    network: Any
    proxy: Any
    control: Control
    authority: RunAuthority
    address: str  # the proxy's ip:3128
    upstream: Any
    target: str  # the upstream's ip:8000


def _ip(container: Any, network: Any) -> str:
    container.reload()
    return str(container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"])


def _listening(container: Any, port: int) -> None:
    """Until something listens on `port` in the container (bounded; polled)."""
    probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=1)"
    deadline = time.monotonic() + 30
    while container.exec_run(["python3", "-c", probe]).exit_code != 0:
        assert time.monotonic() < deadline, f"nothing listens on {port}"
        time.sleep(0.1)  # polled with a deadline, not a wait for an event


@pytest.fixture(scope="module")
def pod(docker_client, built_images) -> Iterator[Pod]:
    name = f"so-egress-pod-{uuid.uuid4().hex[:8]}"
    network = docker_client.networks.create(name, internal=True, labels=LABELS)
    started: list[Any] = []
    try:
        python = image_ref("python")
        upstream = docker_client.containers.run(
            python, ["python3", "-m", "http.server", "8000"], detach=True,
            network=network.name, **HARDENED,
        )  # fmt: skip
        started.append(upstream)
        proxy = docker_client.containers.create(
            image_ref("egress-proxy"),
            ["python3", "-m", "sandbox_orch.egress.remote", "--port", "3128"],
            stdin_open=True, network=network.name, **HARDENED,
        )  # fmt: skip
        started.append(proxy)
        control = Control(docker_client, proxy)  # attached before it starts: no line lost
        proxy.start()
        authority = RunAuthority("r-pod-test")
        server = authority.server()
        started_reply = control.ask(
            op="start", ca=authority.ca_pem.decode(), cert=server.cert_pem.decode(),
            key=server.key_pem.decode(),
        )  # fmt: skip
        assert started_reply["ok"], started_reply
        _listening(upstream, 8000)
        yield Pod(
            network, proxy, control, authority, f"{_ip(proxy, network)}:3128", upstream,
            f"{_ip(upstream, network)}:8000",
        )  # fmt: skip
        control.close()
    finally:
        for container in started:
            container.remove(force=True)
        network.remove()


def fetch(
    docker_client: Any,
    pod: Pod,
    tmp_path: Path,
    credential: Credential,
    urls: list[str],
    ca: bytes | None = None,
) -> tuple[int, list[str], str]:
    """A node (the python image, hardened) fetching `urls` through sandbox-orch-egress
    with `credential` and `ca` (the run's CA by default) in /run/egress."""
    egress = tmp_path / f"egress-{uuid.uuid4().hex[:6]}"
    egress.mkdir(mode=0o755)
    (egress / "node.pem").write_bytes(credential.cert_pem + credential.key_pem)
    (egress / "ca.pem").write_bytes(ca or pod.authority.ca_pem)
    for path in egress.iterdir():
        path.chmod(0o644)  # the node is 10001 (a Secret's files: the node's group)
    node = docker_client.containers.run(
        image_ref("python"),
        ["sandbox-orch-egress", "python3", "-c", FETCH, *urls],
        detach=True,
        network=pod.network.name,
        environment={
            "SANDBOX_ORCH_EGRESS_PROXY": pod.address,
            "HTTP_PROXY": "http://127.0.0.1:3128",
            "http_proxy": "http://127.0.0.1:3128",
            "NO_PROXY": "",
        },
        volumes={str(egress): {"bind": "/run/egress", "mode": "ro"}},
        **HARDENED,
    )
    try:
        code = node.wait(timeout=120)["StatusCode"]
        out = node.logs(stdout=True, stderr=False).decode().split()
        return code, out, node.logs(stdout=False, stderr=True).decode()
    finally:
        node.remove(force=True)


def upstream_hits(pod: Pod) -> int:
    return pod.upstream.logs(stdout=False, stderr=True).decode().count('"GET /')


def test_a_node_reaches_its_grant_through_the_proxy_image_and_nothing_else(
    docker_client, pod, tmp_path
):
    node = pod.authority.node("fetch")
    assert pod.control.ask(
        op="open", node="fetch", fingerprint=node.fingerprint, grants=[pod.target]
    )["ok"]
    before = upstream_hits(pod)
    granted, other = f"http://{pod.target}/", f"http://{pod.target.split(':')[0]}:9/"
    code, out, err = fetch(docker_client, pod, tmp_path, node, [granted, other])
    assert (code, out) == (0, ["200", "403"]), err
    assert upstream_hits(pod) == before + 1
    state = pod.control.ask(op="state", node="fetch")
    assert [v["kind"] for v in state["violations"]] == ["egress"]
    assert ":9 is not granted to node 'fetch'" in state["violations"][0]["detail"]


def test_a_node_cannot_use_another_nodes_grant(docker_client, pod, tmp_path):
    granted = pod.authority.node("granted")
    other = pod.authority.node("other")
    for name, credential, grants in (("granted", granted, [pod.target]), ("other", other, [])):
        opened = pod.control.ask(
            op="open", node=name, fingerprint=credential.fingerprint, grants=grants
        )
        assert opened["ok"], opened
    before = upstream_hits(pod)
    code, out, err = fetch(docker_client, pod, tmp_path, other, [f"http://{pod.target}/"])
    assert (code, out) == (0, ["403"]), err
    assert upstream_hits(pod) == before
    assert len(pod.control.ask(op="state", node="other")["violations"]) == 1


@pytest.mark.parametrize("who", ["unregistered", "another run's CA", "a proxy of another name"])
def test_nothing_gets_through_without_both_sides_certificates(docker_client, pod, tmp_path, who):
    """A certificate the proxy was not told of, one of another run's CA, or a proxy that
    is not the one named (its certificate from the right CA, for another name): the
    forwarder or the proxy ends the connection; the node's request fails, unanswered."""
    ca = None
    if who == "unregistered":
        credential = pod.authority.node("fetch")  # same CA and name, never opened
    elif who == "another run's CA":
        stranger = RunAuthority("r-stranger")
        credential = stranger.node("fetch")
        ca = pod.authority.ca_pem + stranger.ca_pem  # it would trust the proxy still
    else:
        credential = pod.authority.node("named")
        pod.control.ask(op="open", node="named", fingerprint=credential.fingerprint,
                        grants=[pod.target])  # fmt: skip
    before = upstream_hits(pod)
    if who == "a proxy of another name":
        impostor = _impostor(docker_client, pod)
        try:
            address = pod.address
            pod.address = f"{_ip(impostor, pod.network)}:3128"
            code, out, err = fetch(
                docker_client, pod, tmp_path, credential, [f"http://{pod.target}/"]
            )
        finally:
            pod.address = address
            impostor.remove(force=True)
    else:
        code, out, err = fetch(
            docker_client, pod, tmp_path, credential, [f"http://{pod.target}/"], ca
        )
    assert (code, out) == (0, ["RemoteDisconnected"]), err  # closed, never answered
    if who == "a proxy of another name":
        assert 'commonName does not match hostname "sandbox-orch-egress-proxy"' in err
    assert upstream_hits(pod) == before


def _impostor(docker_client: Any, pod: Pod) -> Any:
    """A second proxy whose certificate the run's CA signed for another name, serving
    the `named` node's grants: a node must not talk to it."""
    impostor = docker_client.containers.create(
        image_ref("egress-proxy"),
        ["python3", "-m", "sandbox_orch.egress.remote", "--port", "3128"],
        stdin_open=True, network=pod.network.name, **HARDENED,
    )  # fmt: skip
    control = Control(docker_client, impostor)
    impostor.start()
    server = pod.authority.server("not-the-proxy")
    assert control.ask(
        op="start", ca=pod.authority.ca_pem.decode(), cert=server.cert_pem.decode(),
        key=server.key_pem.decode(),
    )["ok"]  # fmt: skip
    named = pod.authority.node("named")  # another key: what matters is the proxy's name
    control.ask(op="open", node="named", fingerprint=named.fingerprint, grants=[pod.target])
    return impostor


def test_the_wrapper_refuses_an_address_it_cannot_trust(docker_client, pod, tmp_path):
    node = pod.authority.node("fetch")
    for address, why in (
        ("", "SANDBOX_ORCH_EGRESS_PROXY is not set"),
        ("10.0.0.1:3128,fork", "is not ip:port"),
        ("proxy.example:3128", "is not ip:port"),
        ("10.0.0.1:3128:1", "is not ip:port"),
    ):
        saved, pod.address = pod.address, address
        try:
            code, out, err = fetch(docker_client, pod, tmp_path, node, ["http://x/"])
        finally:
            pod.address = saved
        assert (code, out) == (125, []), (address, err)
        assert why in err, err


def test_stdin_ending_stops_the_proxy(docker_client, built_images):
    proxy = docker_client.containers.create(
        image_ref("egress-proxy"),
        ["python3", "-m", "sandbox_orch.egress.remote", "--port", "3128"],
        stdin_open=True, **HARDENED,
    )  # fmt: skip
    try:
        control = Control(docker_client, proxy)
        proxy.start()
        authority = RunAuthority("r-stop")
        server = authority.server()
        assert control.ask(
            op="start", ca=authority.ca_pem.decode(), cert=server.cert_pem.decode(),
            key=server.key_pem.decode(),
        )["ok"]  # fmt: skip
        control._socket.shutdown(socket.SHUT_WR)  # the host's connection ends
        assert proxy.wait(timeout=30)["StatusCode"] == 0
    finally:
        proxy.remove(force=True)


def test_the_proxy_image_holds_this_hosts_libraries_read_only(docker_client, built_images):
    import h11
    import idna

    script = (
        "import h11, idna, os, sandbox_orch.egress.remote as r; "
        "print(h11.__version__, idna.__version__); "
        "print(os.access(os.path.dirname(r.__file__), os.W_OK), os.access(h11.__file__, os.W_OK))"
    )
    out = docker_client.containers.run(
        image_ref("egress-proxy"), ["python3", "-c", script], remove=True, **HARDENED
    ).decode()
    assert out.split("\n")[:2] == [f"{h11.__version__} {idna.__version__}", "False False"]
