"""The cluster's API through the official client's asyncio API (`kubernetes.aio`).

JSON in, JSON out: the manifests are plain dicts (job.py) and so are the objects read back
(readback.py compares dicts), so the client's models are never used; each call is the
generated method's `_without_preload_content` form and its status is checked here. A 404
is `None` (or nothing, for a delete): gone is not an error for a removal.

Commands in a pod (`exec`) go over a websocket (podexec.py), through the client's
WsApiClient made from the same Configuration when first needed.

Imported only by `--backend kubernetes` (the client takes ~0.5 s to import).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, BinaryIO, TypeVar

import aiohttp
from kubernetes.aio import client as k8s
from kubernetes.aio import config as k8s_config
from kubernetes.aio.stream import WsApiClient

from ..base import BackendError
from .podexec import Ran, pod_exec

T = TypeVar("T")

# kind -> (API attribute, method suffix): `create_namespaced_job_without_preload_content`...
KINDS = {
    "Job": ("batch", "namespaced_job"),
    "Secret": ("core", "namespaced_secret"),
    "NetworkPolicy": ("networking", "namespaced_network_policy"),
    "Pod": ("core", "namespaced_pod"),
}
REQUEST_TIMEOUT = 60.0  # seconds, for every call but a followed log
MAX_RESPONSE = 64 * 1024**2  # bytes of one JSON answer (a list of a namespace's objects)
# Seconds between pings on an exec's websocket: a dead server (a half-open connection) is
# noticed instead of waited on forever. The answer must come within half of it, and it
# is not read while the consumer of a command's output is behind (the socket is paused):
# a consumer stalled that long ends the command with an error, not a hang.
HEARTBEAT = 60.0


class ClusterError(BackendError):
    """The API server refused a call or did not answer."""


async def connect(namespace: str, context: str | None = None) -> Cluster:
    """A client for `context` of the kubeconfig ($KUBECONFIG or ~/.kube/config)."""
    configuration = k8s.Configuration()
    # $KUBECONFIG as it is now (the client reads it once, when imported).
    path = os.environ.get("KUBECONFIG") or None
    paths = (path or "~/.kube/config").split(os.pathsep)
    if not any(os.path.exists(os.path.expanduser(p)) for p in paths if p):
        # Said here, in one line: the client would log a warning of its own first.
        where = path if path else "~/.kube/config"
        raise ClusterError(f"no kubeconfig at {where} ($KUBECONFIG, else ~/.kube/config)")
    try:
        await k8s_config.load_kube_config(
            config_file=path, context=context, client_configuration=configuration
        )
    except (k8s_config.ConfigException, OSError, ValueError) as error:
        raise ClusterError(f"no usable kubeconfig ({error})") from None
    return Cluster(k8s.ApiClient(configuration), namespace)


class Cluster:
    def __init__(
        self, api: k8s.ApiClient, namespace: str, ws_api: WsApiClient | None = None
    ) -> None:
        """`ws_api`: the websocket client for exec (tests point it elsewhere); by default
        one made from `api`'s Configuration when first needed."""
        self.api = api
        self.namespace = namespace
        self._ws_api = ws_api
        self.core = k8s.CoreV1Api(api)
        self.batch = k8s.BatchV1Api(api)
        self.networking = k8s.NetworkingV1Api(api)
        self.node = k8s.NodeV1Api(api)

    def _method(self, verb: str, kind: str) -> Any:
        group, suffix = KINDS[kind]
        return getattr(getattr(self, group), f"{verb}_{suffix}_without_preload_content")

    async def _json(self, call: Awaitable[aiohttp.ClientResponse], what: str) -> Any:
        """The answer's JSON; None for a 404; ClusterError for any other failure."""
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                response = await call
            async with response:
                if response.status == 404:
                    return None
                body = await response.content.read(MAX_RESPONSE + 1)
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise ClusterError(f"{what}: the API server did not answer ({error})") from None
        if len(body) > MAX_RESPONSE:
            raise ClusterError(f"{what}: the API server's answer is too large")
        if not 200 <= response.status < 300:
            raise ClusterError(f"{what}: {response.status} {_message(body)}")
        try:
            return json.loads(body)
        except ValueError:
            raise ClusterError(f"{what}: the API server's answer is not JSON") from None

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        kind, name = body["kind"], body["metadata"]["name"]
        created = await self._json(
            self._method("create", kind)(self.namespace, body), f"create {kind} {name}"
        )
        if created is None:
            raise ClusterError(f"create {kind} {name}: 404 (does the namespace exist?)")
        return dict(created)

    async def read(self, kind: str, name: str) -> dict[str, Any] | None:
        return await self._json(
            self._method("read", kind)(name, self.namespace), f"read {kind} {name}"
        )

    async def patch(self, kind: str, name: str, body: dict[str, Any]) -> dict[str, Any] | None:
        call = self._method("patch", kind)(
            name, self.namespace, body, _content_type="application/merge-patch+json"
        )
        return await self._json(call, f"patch {kind} {name}")

    async def delete(self, kind: str, name: str, foreground: bool = False) -> None:
        """Delete (gone already is fine); a Job's pods go with it (Foreground)."""
        extra: dict[str, Any] = {"propagation_policy": "Foreground"} if foreground else {}
        if kind == "Pod":
            extra["grace_period_seconds"] = 0  # SIGKILL, as a kill on Docker
        await self._json(
            self._method("delete", kind)(name, self.namespace, **extra), f"delete {kind} {name}"
        )

    async def listed(self, kind: str, selector: str) -> list[dict[str, Any]]:
        found = await self._json(
            self._method("list", kind)(self.namespace, label_selector=selector),
            f"list {kind} ({selector})",
        )
        return list((found or {}).get("items") or [])

    async def log(self, pod: str, container: str) -> AsyncIterator[bytes]:
        """A container's log, followed until it exits (as the API server sends it)."""
        try:
            response = await self.core.read_namespaced_pod_log_without_preload_content(
                pod, self.namespace, container=container, follow=True, _request_timeout=None
            )
            async with response:
                if response.status != 200:
                    body = await response.content.read(4096)
                    raise ClusterError(f"log of pod {pod}: {response.status} {_message(body)}")
                async for chunk in response.content.iter_any():
                    yield chunk
        except (aiohttp.ClientError, OSError) as error:
            raise ClusterError(f"log of pod {pod}: {error}") from None

    async def namespace_object(self) -> dict[str, Any] | None:
        call = self.core.read_namespace_without_preload_content(self.namespace)
        return await self._json(call, f"read namespace {self.namespace}")

    async def runtime_class(self, name: str) -> dict[str, Any] | None:
        call = self.node.read_runtime_class_without_preload_content(name)
        return await self._json(call, f"read RuntimeClass {name}")

    @property
    def ws_api(self) -> WsApiClient:
        if self._ws_api is None:
            self._ws_api = WsApiClient(self.api.configuration, heartbeat=HEARTBEAT)
        return self._ws_api

    async def exec(
        self,
        pod: str,
        container: str,
        argv: list[str],
        consume: Callable[[BinaryIO], T],
        stdin: AsyncIterator[bytes] | None = None,
    ) -> Ran[T]:
        """`argv` in a container of a pod of the namespace (podexec.py)."""
        return await pod_exec(
            self.ws_api, self.namespace, pod, container, argv, consume=consume, stdin=stdin
        )

    async def close(self) -> None:
        try:
            await self.api.close()
        finally:
            if self._ws_api is not None:
                await self._ws_api.close()


def _message(body: bytes) -> str:
    """The API's Status message, one line, bounded (never the whole body)."""
    try:
        message = str(json.loads(body).get("message", ""))
    except (ValueError, AttributeError):
        message = body[:200].decode("utf-8", "replace")
    return " ".join(message.split())[:300]
