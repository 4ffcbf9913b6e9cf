"""The Kubernetes backend against kmock's in-process API *emulator* on loopback.

The emulator stores what it is sent and serves it back (also as watch streams); it runs
nothing and checks nothing (no schema, no admission, no label selectors, no Job
controller). So these tests prove the backend's plumbing through the official client
(URLs, verbs, bodies, status handling, watches, cleanup), not the cluster's semantics:
`FakeKubelet` plays the Job controller and the kubelet, scripted per node (its exit code,
OOM reason, log, or running until killed). It writes pods through the API, as a kubelet
does, so the backend's pod watch sees them. A pod with a `deliver` init container is
held with it running until its gate (`FakeKubelet.gate`) says: "go" ends it with 0 and
the node runs; anything else fails the pod (at once, never running, if said before).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import kmock
from kubernetes.aio import client as k8s
from kubernetes.aio.stream import WsApiClient

from sandbox_orch.backend.kubernetes.client import Cluster
from sandbox_orch.backend.kubernetes.settings import ClusterSettings

NAMESPACE = "so-test"
PODS = kmock.resource("v1/pods")
JOBS = kmock.resource("batch/v1/jobs")
SECRETS = kmock.resource("v1/secrets")
POLICIES = kmock.resource("networking.k8s.io/v1/networkpolicies")
POD_URL = f"/api/v1/namespaces/{NAMESPACE}/pods"
SETTINGS = ClusterSettings(
    namespace=NAMESPACE,
    runtime_classes={"runc": None, "runsc": "gvisor"},
    images={
        f"sandbox-orch/{name}": f"registry.example/sandbox-orch/{name}@sha256:"
        + hashlib.sha256(name.encode()).hexdigest()
        for name in ("base", "shell", "python", "egress-proxy")
    },
)
PROXY = "egress-proxy"  # the proxy pod's role label, and its key in FakeKubelet.scripts
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}
# The emulator tests' policy (RUNTIME: runc or runsc), one secret for a shell node.
POLICY = """\
    version: 1
    name: k8s
    runtimes: [shell]
    images: ["sandbox-orch/shell"]
    isolation: {oci_runtime: RUNTIME, user: "10001:10001", tmpfs: {/tmp: 64m}}
    network: {egress: []}
    mounts: []
    env: {deny: []}
    secrets:
      K8S_KEY: {from_env: SO_UNIT_K8S_KEY, runtimes: [shell]}
    limits: {cpus: 2, memory: 2g, pids: 512, timeout: 30m, output: 16m, artifacts: 1g}
    defaults: {cpus: 1, memory: 512m, pids: 256, timeout: 10m}
"""


@dataclass(frozen=True)
class Script:
    exit_code: int | None = 0  # None: runs until its pod is deleted
    reason: str | None = None  # the container's termination reason ("OOMKilled")
    log: bytes = b""


@dataclass
class FakeKubelet:
    """Makes each released (unsuspended) Job's pod, in the state its node's script says."""

    emulator: Any
    api: Any  # an aiohttp session on the emulator: pods are written through the API
    scripts: dict[str, Script] = field(default_factory=dict)
    made: list[str] = field(default_factory=list)
    # Changes the pod's spec before it is stored (a mutating webhook), for read-back.
    mutate: Any = None
    # What was written into a pod's deliver gate (None: nothing yet), by pod name.
    gate: Callable[[str], str | None] = lambda pod: None
    # The run's egress-proxy pod: whether it comes to run (at 127.0.0.1), else it stays
    # Pending; the proxy's `Script` (scripts[PROXY]) can make it end instead.
    proxy_runs: bool = True

    def live(self, kind: Any) -> dict[str, dict[str, Any]]:
        return {
            name: obj.raw
            for (resource, _, name), obj in list(self.emulator.objects.items())
            if resource == kind and not obj.deleted
        }

    async def run(self) -> None:
        making: set[asyncio.Future[None]] = set()  # a held pod does not hold the others
        try:
            await self._run(making)
        finally:
            for task in making:
                task.cancel()
            await asyncio.gather(*making, return_exceptions=True)

    async def _run(self, making: set[asyncio.Future[None]]) -> None:
        while True:
            pods = self.live(PODS)
            for name, job in self.live(JOBS).items():
                released = not job["spec"].get("suspend")  # absent: not suspended
                if name not in self.made and released:
                    self.made.append(name)
                    task = asyncio.ensure_future(self._pod(name, job))
                    making.add(task)
                    task.add_done_callback(making.discard)
                elif not released and f"{name}-x1" in pods:
                    # The Job controller deletes a suspended Job's pods: also one it made
                    # just before the suspension, which the backend's kill could not see.
                    await self._call("delete", f"{POD_URL}/{name}-x1")
            await asyncio.sleep(0.005)  # the emulated kubelet's own loop, not a test's wait

    async def _call(self, method: str, url: str, **kwargs: Any) -> None:
        async with self.api.request(method, url, **kwargs) as response:
            assert response.status < 300 or response.status == 404, await response.text()

    async def _pod(self, job: str, body: dict[str, Any]) -> None:
        """The Job's pod, as a kubelet moves it: Pending, then Running, then (unless it
        runs until killed) terminated as scripted; each step a write the watch sees."""
        if body["metadata"]["labels"].get("sandbox-orch.role") == PROXY:
            await self._proxy_pod(job, body)
            return
        node = body["metadata"]["annotations"]["sandbox-orch.node"]
        script = self.scripts.get(node, Script())
        pod = f"{job}-x1"
        template = body["spec"]["template"]
        spec = dict(template["spec"])
        if self.mutate is not None:
            spec = self.mutate(spec)
        self.emulator[f"get /api/v1/namespaces/{NAMESPACE}/pods/{pod}/log"] << script.log
        labels = {**template["metadata"]["labels"], "job-name": job}
        await self._call("post", POD_URL, json={
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod, "namespace": NAMESPACE, "labels": labels},
            "spec": spec,
            "status": {"phase": "Pending"},
        })  # fmt: skip
        running = {"running": {"startedAt": "2026-12-02T00:00:00Z"}}
        # Another container (an artifact producer's holder) runs on: the pod stays Running.
        others = [c["name"] for c in spec["containers"] if c["name"] != "node"]
        init = None  # the deliver container's state, if the pod has one
        if spec.get("initContainers"):
            waiting = {"waiting": {"reason": "PodInitializing"}}
            said = self.gate(pod)  # said already: it fails as it starts, never running
            if said is None:
                await self._status(pod, "Pending", waiting, [], init=running)
            while (said := self.gate(pod)) is None:
                await asyncio.sleep(0.005)  # the emulated kubelet's own loop
            code = 0 if said.strip() == "go" else 1
            init = {"terminated": {"exitCode": code, "reason": "Error" if code else "Completed"}}
            if code != 0:  # the node's container never starts
                await self._status(pod, "Failed", waiting, [], init=init)
                return
        await self._status(pod, "Running", running, others, init=init)
        if script.exit_code is not None:
            reason = script.reason or "Completed"
            ended = {"terminated": {"exitCode": script.exit_code, "reason": reason}}
            phase = "Running" if others else "Succeeded" if script.exit_code == 0 else "Failed"
            await self._status(pod, phase, ended, others, init=init)

    async def _proxy_pod(self, job: str, body: dict[str, Any]) -> None:
        """The proxy's pod: Running at 127.0.0.1 (its proxy is exec'd, as a local process,
        by k8s_exec_server.py), or Pending for ever, or ended as its script says."""
        pod = f"{job}-x1"
        template = body["spec"]["template"]
        labels = {**template["metadata"]["labels"], "job-name": job}
        await self._call("post", POD_URL, json={
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod, "namespace": NAMESPACE, "labels": labels},
            "spec": template["spec"],
            "status": {"phase": "Pending"},
        })  # fmt: skip
        script = self.scripts.get(PROXY, Script(exit_code=None))
        if not self.proxy_runs:
            return
        state: dict[str, Any] = {"running": {"startedAt": "2026-12-02T00:00:00Z"}}
        phase = "Running"
        if script.exit_code is not None:
            state = {"terminated": {"exitCode": script.exit_code, "reason": "Error"}}
            phase = "Failed"
        status = {
            "phase": phase,
            "podIP": "127.0.0.1",
            "containerStatuses": [{"name": "proxy", "state": state}],
        }
        await self._call(
            "patch", f"{POD_URL}/{pod}", json={"status": status},
            headers={"Content-Type": "application/merge-patch+json"},
        )  # fmt: skip

    async def _status(
        self,
        pod: str,
        phase: str,
        state: dict[str, Any],
        others: list[str],
        init: dict[str, Any] | None = None,
    ) -> None:
        running = {"running": {"startedAt": "2026-12-02T00:00:00Z"}}
        statuses = [{"name": "node", "state": state}]
        statuses += [{"name": name, "state": running} for name in others]
        status: dict[str, Any] = {"phase": phase, "containerStatuses": statuses}
        if init is not None:
            status["initContainerStatuses"] = [{"name": "deliver", "state": init}]
        await self._call(
            "patch", f"{POD_URL}/{pod}", json={"status": status},
            headers={"Content-Type": "application/merge-patch+json"},
        )  # fmt: skip


def namespace_object(labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NAMESPACE, "labels": labels},
    }


@contextlib.asynccontextmanager
async def emulated(
    scripts: dict[str, Script] | None = None,
    namespace_labels: dict[str, str] | None = None,
    runtime_classes: tuple[str, ...] = ("gvisor",),
    ws_api: WsApiClient | None = None,
) -> AsyncIterator[tuple[Any, Cluster, FakeKubelet]]:
    """The emulator on loopback, a client for it, and its scripted kubelet running.
    kmock has no websockets: `ws_api` points exec elsewhere (k8s_exec_server.py)."""
    async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator) as server:
        labels = RESTRICTED if namespace_labels is None else namespace_labels
        # The emulator reads /api/v1/namespaces/NAME as a namespaced list: served here.
        emulator[f"get /api/v1/namespaces/{NAMESPACE}"] << namespace_object(labels)
        for name in runtime_classes:
            emulator.objects[kmock.resource("node.k8s.io/v1/runtimeclasses"), None, name] = {
                "metadata": {"name": name},
                "handler": "runsc",
            }
        configuration = k8s.Configuration(host=str(server.url).rstrip("/"))
        cluster = Cluster(k8s.ApiClient(configuration), NAMESPACE, ws_api)
        kubelet = FakeKubelet(emulator, server.client, dict(scripts or {}))
        task = asyncio.ensure_future(kubelet.run())
        try:
            yield emulator, cluster, kubelet
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await cluster.close()
