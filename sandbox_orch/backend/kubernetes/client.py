"""The cluster's API through the official client's asyncio API (`kubernetes.aio`).

JSON in, JSON out: the manifests are plain dicts (job.py) and so are the objects read back
(readback.py compares dicts), so the client's models are never used. Each call goes by its
path through the client's ApiClient (apicall.py), not through the generated API classes:
importing CoreV1Api and the others loads every model they name, 3 of the 4 seconds `run
--backend kubernetes` took to fail on an unreachable cluster. Each answer's status is
checked here; a 404 is `None` (or nothing, for a delete): gone is not an error for a
removal.

Commands in a pod go over a websocket (podexec.py, called by the backend), through the client's
WsApiClient made from the same Configuration when first needed.

Imported only by `--backend kubernetes` (the client takes ~0.5 s to import).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable
from typing import Any
from urllib.parse import quote

import aiohttp
from kubernetes.aio import config as k8s_config
from kubernetes.aio.client.api_client import ApiClient
from kubernetes.aio.client.configuration import Configuration
from kubernetes.aio.stream import WsApiClient

from ..base import BackendError
from .apicall import Query, api_call

# kind -> the path of its objects in a namespace
KINDS = {
    "Job": "/apis/batch/v1/namespaces/{namespace}/jobs",
    "Secret": "/api/v1/namespaces/{namespace}/secrets",
    "NetworkPolicy": "/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies",
    "Pod": "/api/v1/namespaces/{namespace}/pods",
}
REQUEST_TIMEOUT = 60.0  # seconds, for every call but a followed log
MAX_RESPONSE = 64 * 1024**2  # bytes of one JSON answer (a list of a namespace's objects)
MERGE_PATCH = "application/merge-patch+json"
WATCH_SECONDS = 300  # the API server ends a watch after this; the watcher starts another
# Seconds between pings on an exec's websocket: a dead server (a half-open connection) is
# noticed instead of waited on forever. The answer must come within half of it, and it
# is not read while the consumer of a command's output is behind (the socket is paused):
# a consumer stalled that long ends the command with an error, not a hang.
HEARTBEAT = 60.0


class ClusterError(BackendError):
    """The API server refused a call or did not answer."""


async def connect(namespace: str, context: str | None = None) -> Cluster:
    """A client for `context` of the kubeconfig ($KUBECONFIG or ~/.kube/config)."""
    configuration = Configuration()
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
    return Cluster(ApiClient(configuration), namespace)


class Cluster:
    def __init__(self, api: ApiClient, namespace: str, ws_api: WsApiClient | None = None) -> None:
        """`ws_api`: the websocket client for exec (tests point it elsewhere); by default
        one made from `api`'s Configuration when first needed."""
        self.api = api
        self.namespace = namespace
        self._ws_api = ws_api

    async def _request(
        self,
        method: str,
        path: str,
        query: Query | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = REQUEST_TIMEOUT,
    ) -> aiohttp.ClientResponse:
        """One call by path (`{namespace}` filled in); the raw response, for the caller
        to check and read."""
        headers = {"Content-Type": content_type} if body is not None else {}
        where = {"namespace": self.namespace}
        return await api_call(self.api, method, path, where, query, headers, body, timeout)

    def _path(self, kind: str, name: str | None = None) -> str:
        return KINDS[kind] + (f"/{_segment(name)}" if name is not None else "")

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
            self._request("POST", self._path(kind), body=body), f"create {kind} {name}"
        )
        if created is None:
            raise ClusterError(f"create {kind} {name}: 404 (does the namespace exist?)")
        return dict(created)

    async def read(self, kind: str, name: str) -> dict[str, Any] | None:
        return await self._json(self._request("GET", self._path(kind, name)), f"read {kind} {name}")

    async def patch(self, kind: str, name: str, body: dict[str, Any]) -> dict[str, Any] | None:
        call = self._request("PATCH", self._path(kind, name), body=body, content_type=MERGE_PATCH)
        return await self._json(call, f"patch {kind} {name}")

    async def delete(self, kind: str, name: str, foreground: bool = False) -> None:
        """Delete (gone already is fine); a Job's pods go with it (Foreground)."""
        query: Query = [("propagationPolicy", "Foreground")] if foreground else []
        if kind == "Pod":
            query.append(("gracePeriodSeconds", 0))  # SIGKILL, as a kill on Docker
        await self._json(
            self._request("DELETE", self._path(kind, name), query), f"delete {kind} {name}"
        )

    async def listed(self, kind: str, selector: str) -> list[dict[str, Any]]:
        return (await self.listing(kind, selector))[0]

    async def listing(self, kind: str, selector: str) -> tuple[list[dict[str, Any]], str | None]:
        """The objects and the list's resourceVersion (where a watch of it starts)."""
        found = await self._json(
            self._request("GET", self._path(kind), [("labelSelector", selector)]),
            f"list {kind} ({selector})",
        )
        version = ((found or {}).get("metadata") or {}).get("resourceVersion")
        return list((found or {}).get("items") or []), version if isinstance(version, str) else None

    async def watch(
        self, kind: str, selector: str, version: str | None
    ) -> AsyncIterator[dict[str, Any]]:
        """The changes to `kind`'s objects after `version`, as the API server sends them
        (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR), until it ends the stream (it does
        after WATCH_SECONDS). One event per line, each line bounded."""
        what = f"watch {kind} ({selector})"
        try:
            query: Query = [
                ("labelSelector", selector),
                ("watch", "true"),
                ("allowWatchBookmarks", "true"),
                ("timeoutSeconds", WATCH_SECONDS),
            ]
            if version is not None:
                query.append(("resourceVersion", version))
            response = await self._request("GET", self._path(kind), query, timeout=None)
            async with response:
                if response.status != 200:
                    body = await response.content.read(4096)
                    raise ClusterError(f"{what}: {response.status} {_message(body)}")
                while line := await response.content.readline():
                    if line.strip():
                        yield _event(line, what)
        except (aiohttp.ClientError, OSError, ValueError) as error:
            # ValueError: aiohttp's "Line is too long" (no object of ours is near it)
            raise ClusterError(f"{what}: {error}") from None

    async def log(self, pod: str, container: str) -> AsyncIterator[bytes]:
        """A container's log, followed until it exits (as the API server sends it)."""
        try:
            query: Query = [("container", container), ("follow", "true")]
            path = f"{self._path('Pod', pod)}/log"
            response = await self._request("GET", path, query, timeout=None)
            async with response:
                if response.status != 200:
                    body = await response.content.read(4096)
                    raise ClusterError(f"log of pod {pod}: {response.status} {_message(body)}")
                async for chunk in response.content.iter_any():
                    yield chunk
        except (aiohttp.ClientError, OSError) as error:
            raise ClusterError(f"log of pod {pod}: {error}") from None

    async def namespace_object(self) -> dict[str, Any] | None:
        call = self._request("GET", "/api/v1/namespaces/{namespace}")
        return await self._json(call, f"read namespace {self.namespace}")

    async def runtime_class(self, name: str) -> dict[str, Any] | None:
        call = self._request("GET", f"/apis/node.k8s.io/v1/runtimeclasses/{_segment(name)}")
        return await self._json(call, f"read RuntimeClass {name}")

    @property
    def ws_api(self) -> WsApiClient:
        if self._ws_api is None:
            self._ws_api = WsApiClient(self.api.configuration, heartbeat=HEARTBEAT)
        return self._ws_api

    async def close(self) -> None:
        try:
            await self.api.close()
        finally:
            if self._ws_api is not None:
                await self._ws_api.close()


def _segment(name: str) -> str:
    """A name as one path segment (names are DNS labels; this makes sure of it)."""
    return quote(name, safe="")


def _event(line: bytes, what: str) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except ValueError:
        raise ClusterError(f"{what}: an event that is not JSON") from None
    if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
        raise ClusterError(f"{what}: an event without an object")
    return event


def _message(body: bytes) -> str:
    """The API's Status message, one line, bounded (never the whole body)."""
    try:
        message = str(json.loads(body).get("message", ""))
    except (ValueError, AttributeError):
        message = body[:200].decode("utf-8", "replace")
    return " ".join(message.split())[:300]
