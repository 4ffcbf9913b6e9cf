"""Egress on the Kubernetes backend, against kmock's API *emulator* and our exec endpoint
(k8s_exec_server.py), which runs the proxy the backend execs in its pod as a real local
process (egress/remote.py, listening on loopback). So the proxy's start, its control
connection, the nodes' certificates and what they get through are real; only the pods
are the emulator's (FakeKubelet), and no NetworkPolicy is enforced here."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import re
import socket
import ssl
import sys
import textwrap
from pathlib import Path
from typing import Any

import kmock
import pytest

from sandbox_orch.backend.base import BackendError
from sandbox_orch.backend.kubernetes.backend import KubernetesBackend
from sandbox_orch.backend.kubernetes.egress import PodEgressProxy
from sandbox_orch.backend.kubernetes.opening import open_backend
from sandbox_orch.backend.kubernetes.proxypod import proxy_argv, proxy_job_name
from sandbox_orch.egress.identity import SERVER_NAME
from sandbox_orch.orchestrator import RunOptions, run_plan
from sandbox_orch.policy import load_policy

from .k8s_emulator import JOBS, PODS, POLICIES, PROXY, SECRETS, SETTINGS, Script, emulated
from .k8s_exec_server import ExecServer
from .proxytalk import LOOPBACK_2, answer_of, echo_server
from .test_k8s_backend import admitted

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[2]
RUN = "r-k8s-egress"
OWNER = "host:1:2"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def exec_server(tmp_path: Path) -> ExecServer:
    """Its `python3` is this interpreter, with this checkout's package."""
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    (tmp_path / "exec").mkdir(exist_ok=True)
    return ExecServer(tmp_path / "exec", env={"PATH": path, "PYTHONPATH": str(ROOT)})


async def through(proxy: PodEgressProxy, node: str, tmp_path: Path, raw: bytes) -> bytes:
    """What a node's sandbox-orch-egress does: TLS to the proxy's address with the files
    of the node's Secret; `raw` sent; everything answered until the proxy closes, or the
    upstream's echo of b"ping"."""
    values = proxy.secret_values(node)
    (tmp_path / "node.pem").write_text(values["egress-node.pem"])
    context = ssl.create_default_context(cadata=values["egress-ca.pem"])
    context.load_cert_chain(tmp_path / "node.pem")
    assert proxy.address is not None
    host, _, port = proxy.address.rpartition(":")
    reader, writer = await asyncio.open_connection(
        host, int(port), ssl=context, server_hostname=SERVER_NAME
    )
    writer.write(raw)
    data = b""
    try:
        async with asyncio.timeout(10):
            while not data.endswith(b"PING") and (chunk := await reader.read(4096)):
                data += chunk
    finally:
        writer.close()
    return data


def connect(port: int) -> bytes:
    return f"CONNECT {LOOPBACK_2}:{port} HTTP/1.1\r\nHost: x\r\n\r\nping".encode()


def test_emulator_the_proxy_pod_starts_serves_each_node_by_its_certificate_and_goes(tmp_path):
    unreachable: list[tuple[str, str, str]] = []

    async def scenario() -> dict[str, Any]:
        settings = dataclasses.replace(SETTINGS, proxy_port=free_port())
        server = exec_server(tmp_path)
        upstream = await echo_server()
        granted = upstream.sockets[0].getsockname()[1]
        gone = free_port()
        async with (
            server.serving(),
            emulated(ws_api=server.ws_api()) as (_, cluster, kubelet),
        ):
            backend = KubernetesBackend(cluster, settings)
            proxy = backend.egress_proxy(RUN, OWNER, [], "runsc")
            proxy.on_unreachable = lambda *said: unreachable.append(said)
            await asyncio.gather(  # nodes start together: their requests overlap
                proxy.open("fetch", [f"{LOOPBACK_2}:{granted}", f"{LOOPBACK_2}:{gone}"]),
                proxy.open("other", []),
            )
            seen: dict[str, Any] = {
                "gone_port": gone,
                "address": proxy.address,
                "job": kubelet.live(JOBS)[proxy_job_name(RUN)],
                "policies": sorted(kubelet.live(POLICIES)),
                "exec": [(e.pod, e.container, e.command) for e in server.exchanges],
                "fetch": await through(proxy, "fetch", tmp_path, connect(granted)),
                "other": await through(proxy, "other", tmp_path, connect(granted)),
                "gone": await through(proxy, "fetch", tmp_path, connect(gone)),
            }
            # What the runner reads comes from the pod's proxy once settled.
            seen["before"] = proxy.violations("other")
            await proxy.settle("other")
            seen["after"] = proxy.violations("other")
            await proxy.close()
            seen["jobs"] = kubelet.live(JOBS)
            with pytest.raises((ConnectionError, OSError)):  # the proxy stopped with it
                await through(proxy, "fetch", tmp_path, connect(granted))
            await backend.close()
        upstream.close()
        return seen

    seen = asyncio.run(scenario())
    port = seen["job"]["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert seen["address"] == f"127.0.0.1:{port}"
    assert seen["job"]["metadata"]["labels"]["sandbox-orch.role"] == PROXY
    assert seen["job"]["spec"]["template"]["spec"]["runtimeClassName"] == "gvisor"
    assert seen["policies"] == [
        f"sandbox-orch-{RUN}-deny", f"sandbox-orch-{RUN}-egress", f"sandbox-orch-{RUN}-proxy"
    ]  # fmt: skip
    assert seen["exec"] == [(f"{proxy_job_name(RUN)}-x1", "proxy", proxy_argv(port))]
    assert seen["fetch"] == b"HTTP/1.1 200 Connection Established\r\n\r\nPING"
    assert answer_of(seen["other"])[0].startswith("HTTP/1.1 403")  # not its grant
    assert answer_of(seen["gone"])[0].startswith("HTTP/1.1 502")
    assert seen["before"] == []
    [violation] = seen["after"]
    assert "is not granted to node 'other'" in violation["detail"]
    # Reported as it happened, by the pod's proxy, through its control connection.
    assert unreachable == [("fetch", f"{LOOPBACK_2}:{seen['gone_port']}", "connection refused")]
    assert seen["jobs"] == {}  # the proxy's Job went with `close`


EGRESS_POLICY = """\
    version: 1
    name: k8s-egress
    runtimes: [shell]
    images: ["sandbox-orch/shell"]
    isolation: {oci_runtime: runc, user: "10001:10001", tmpfs: {/tmp: 64m}}
    network: {egress: ["example.com:443"]}
    mounts: []
    env: {deny: []}
    secrets: {}
    limits: {cpus: 2, memory: 2g, pids: 512, timeout: 30m, output: 16m, artifacts: 1g}
    defaults: {cpus: 1, memory: 512m, pids: 256, timeout: 10m}
"""
WORKFLOW = """\
version: 1
name: egress
nodes:
  fetch:
    runtime: shell
    command: [curl, https://example.com]
    network: {egress: ["example.com:443"]}
  offline:
    runtime: shell
    command: ["true"]
"""


async def _run(
    tmp_path: Path, proxy: Script | None = None, runs: bool = True, undeletable: bool = False
) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
    """`runs`: whether the proxy's pod comes to run; if not, the run is interrupted (its
    Ctrl-C) once that pod exists, while the proxy waits for it. `undeletable`: the API
    fails to delete the proxy's Job."""
    (tmp_path / "policy.yaml").write_text(textwrap.dedent(EGRESS_POLICY))
    policy = load_policy(tmp_path / "policy.yaml")
    plan, sandboxes = admitted(WORKFLOW, policy)
    settings = dataclasses.replace(SETTINGS, proxy_port=free_port())
    server = exec_server(tmp_path)
    scripts = {PROXY: proxy} if proxy is not None else {}
    async with (
        server.serving(),
        emulated(scripts, ws_api=server.ws_api()) as (emulator, cluster, kubelet),
    ):
        kubelet.proxy_runs = runs
        if undeletable:
            deleting = ("delete", re.compile(f".*/jobs/{proxy_job_name(RUN)}$"))
            emulator[deleting] << kmock.KubernetesError(500, "Boom", "etcd is away")
        stop = asyncio.Event()

        async def interrupt() -> None:
            while f"{proxy_job_name(RUN)}-x1" not in kubelet.live(PODS):
                await asyncio.sleep(0.005)  # polled: the pod appears when the kubelet makes it
            stop.set()

        interrupting = None if runs else asyncio.ensure_future(interrupt())
        backend = await open_backend(settings, None, plan, sandboxes, cluster=cluster)
        try:
            report = await run_plan(
                plan, policy, sandboxes, backend, RUN, lambda e: None, stop,
                RunOptions(keep_going=True),
            )  # fmt: skip
        finally:
            await backend.close()
            if interrupting is not None:
                interrupting.cancel()
        left = {kind: kubelet.live(kind) for kind in (JOBS, SECRETS, POLICIES)}
        created = [r.data for r in list(emulator) if r.method == "POST"]
        return report, left, created


def test_emulator_a_node_with_egress_gets_its_certificate_and_the_proxy_address(tmp_path):
    report, left, created = asyncio.run(_run(tmp_path))
    nodes = report.results["nodes"]
    assert nodes["fetch"]["status"] == nodes["offline"]["status"] == "succeeded", nodes
    assert left == {JOBS: {}, SECRETS: {}, POLICIES: {}}
    jobs = {b["metadata"]["name"]: b for b in created if b["kind"] == "Job"}
    proxy = jobs.pop(proxy_job_name(RUN))
    port = proxy["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
    fetch = next(j for name, j in jobs.items() if "-fetch-" in name)
    offline = next(j for name, j in jobs.items() if "-offline-" in name)
    pod = fetch["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["SANDBOX_ORCH_EGRESS_PROXY"] == f"127.0.0.1:{port}"
    assert env["HTTPS_PROXY"] == "http://127.0.0.1:3128"
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["/run/egress"]["readOnly"] is True
    [volume] = [v for v in pod["volumes"] if v["name"] == mounts["/run/egress"]["name"]]
    assert volume["secret"]["secretName"] == f"{fetch['metadata']['name']}-env"
    assert fetch["metadata"]["labels"]["sandbox-orch.egress"] == "proxy"
    # Its Secret holds its own certificate and key, and the run's CA; a node without
    # egress gets none, and no proxy.
    secrets = {b["metadata"]["name"]: b for b in created if b["kind"] == "Secret"}
    data = secrets[f"{fetch['metadata']['name']}-env"]["data"]
    assert set(data) == {"egress-node.pem", "egress-ca.pem"}
    pem = base64.b64decode(data["egress-node.pem"])
    assert b"BEGIN CERTIFICATE" in pem and b"BEGIN PRIVATE KEY" in pem
    assert secrets[f"{offline['metadata']['name']}-env"]["data"] == {}
    offline_env = {e["name"] for e in offline["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "SANDBOX_ORCH_EGRESS_PROXY" not in offline_env
    # No key in any manifest but the Secret's, and none in the results.
    for body in created:
        if body["kind"] != "Secret":
            assert "PRIVATE KEY" not in str(body)
    assert "PRIVATE KEY" not in str(report.results)


def test_emulator_a_proxy_that_cannot_start_errors_only_the_nodes_with_egress(tmp_path):
    report, left, _ = asyncio.run(_run(tmp_path, proxy=Script(exit_code=1)))
    nodes = report.results["nodes"]
    assert nodes["offline"]["status"] == "succeeded"
    assert nodes["fetch"]["status"] == "errored"
    assert nodes["fetch"]["reason"] == "the run's egress proxy: its pod ended (Failed)"
    assert left == {JOBS: {}, SECRETS: {}, POLICIES: {}}


def test_emulator_ctrl_c_while_the_proxy_starts_leaves_nothing(tmp_path):
    report, left, _ = asyncio.run(_run(tmp_path, runs=False))
    assert report.results["nodes"]["fetch"]["status"] == "cancelled"
    assert left == {JOBS: {}, SECRETS: {}, POLICIES: {}}


def test_emulator_a_proxy_job_that_cannot_be_deleted_is_reported(tmp_path):
    report, _, _ = asyncio.run(_run(tmp_path, undeletable=True))
    assert report.results["nodes"]["fetch"]["status"] == "succeeded"
    [failure] = report.cleanup_failures
    assert failure.startswith(f"egress proxy Job {proxy_job_name(RUN)}: delete Job ")
    assert "500" in failure  # and `sandbox-orch run` prints it: left for `gc`


def test_a_proxy_that_stopped_fails_each_request_with_why(tmp_path):
    async def scenario() -> str:
        settings = dataclasses.replace(SETTINGS, proxy_port=free_port())
        server = exec_server(tmp_path)
        # A proxy that exits at once, saying why (a python3 that is not one).
        broken = tmp_path / "bin"
        broken.mkdir()
        (broken / "python3").write_text("#!/bin/sh\necho 'cannot start: bad image' >&2\nexit 1\n")
        (broken / "python3").chmod(0o755)
        server.env = {"PATH": f"{broken}:/usr/bin:/bin"}
        async with server.serving(), emulated(ws_api=server.ws_api()) as (_, cluster, _k):
            backend = KubernetesBackend(cluster, settings)
            proxy = backend.egress_proxy(RUN, OWNER, [], "runc")
            with pytest.raises(BackendError) as failed:
                await proxy.open("fetch", [])
            await proxy.close()
            await backend.close()
        return str(failed.value)

    said = asyncio.run(scenario())
    assert said.startswith("the run's egress proxy: the proxy stopped (exit 1): "), said
    assert said.endswith("cannot start: bad image")


def test_an_idle_control_connection_is_kept_busy(tmp_path, monkeypatch):
    from sandbox_orch.backend.kubernetes import egress

    monkeypatch.setattr(egress, "KEEPALIVE", 0.01)
    asked: list[str] = []
    request = egress.Control.request

    async def recorded(self: Any, message: dict[str, Any]) -> dict[str, Any]:
        reply = await request(self, message)
        asked.append(message["op"])
        return reply

    monkeypatch.setattr(egress.Control, "request", recorded)

    async def scenario() -> None:
        settings = dataclasses.replace(SETTINGS, proxy_port=free_port())
        server = exec_server(tmp_path)
        async with server.serving(), emulated(ws_api=server.ws_api()) as (_, cluster, _k):
            backend = KubernetesBackend(cluster, settings)
            proxy = backend.egress_proxy(RUN, OWNER, [], "runc")
            await proxy.open("fetch", [])
            while asked.count("ping") < 2:
                await asyncio.sleep(0.01)  # polled: the pings come every KEEPALIVE s
            await proxy.close()
            await backend.close()

    asyncio.run(scenario())
    assert asked[0] == "start" and "open" in asked and asked.count("ping") >= 2


def test_emulator_a_brokered_secret_reaches_the_proxy_pod_only_and_is_added_there(tmp_path):
    """The value goes over the control connection alone (its CA bundle as text, not a
    path of this host's); the node holds the placeholder, and the upstream gets the key."""
    trustme = pytest.importorskip("trustme")
    seen: list[bytes] = []
    from sandbox_orch.egress.broker import Brokered

    async def scenario() -> tuple[bytes, list[dict[str, Any]]]:
        ca = trustme.CA()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert(LOOPBACK_2).configure_cert(context)

        async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            await writer.drain()
            writer.close()

        api = await asyncio.start_server(upstream, LOOPBACK_2, 0, ssl=context)
        port = api.sockets[0].getsockname()[1]
        bundle = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(bundle))
        entry = Brokered(
            name="API_KEY", upstream=f"https://{LOOPBACK_2}:{port}", header="x-api-key",
            scheme="", placeholder="sandbox-placeholder-1", value="sk-real-SECRET-42",
            ca_bundle=str(bundle),
        )  # fmt: skip
        settings = dataclasses.replace(SETTINGS, proxy_port=free_port())
        server = exec_server(tmp_path)
        async with server.serving(), emulated(ws_api=server.ws_api()) as (emulator, cluster, _k):
            backend = KubernetesBackend(cluster, settings)
            proxy = backend.egress_proxy(RUN, OWNER, [], "runc")
            await proxy.open("agent", [], brokered=[entry])
            request = (
                f"POST /_broker/{LOOPBACK_2}:{port}/v1/messages HTTP/1.1\r\nHost: x\r\n"
                "x-api-key: sandbox-placeholder-1\r\ncontent-length: 0\r\n\r\n"
            ).encode()
            answer = await through(proxy, "agent", tmp_path, request)
            await proxy.close()
            await backend.close()
            created = [r.data for r in list(emulator) if r.method == "POST"]
        api.close()
        return answer, created

    answer, created = asyncio.run(scenario())
    assert answer_of(answer) == ("HTTP/1.1 200 OK", "ok")
    [head] = seen
    assert b"x-api-key: sk-real-SECRET-42" in head and b"placeholder" not in head
    assert "SECRET" not in str(created)  # in no object of the cluster's
