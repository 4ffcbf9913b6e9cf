"""The cluster's API through the official client's asyncio API (`kubernetes.aio`).

JSON in, JSON out: the manifests are plain dicts (job.py) and so are the objects read back
(readback.py compares dicts), so the client's models are never used; each call is the
generated method's `_without_preload_content` form and its status is checked here. A 404
is `None` (or nothing, for a delete): gone is not an error for a removal.

Imported only by `--backend kubernetes` (the client takes ~0.5 s to import).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import aiohttp
from kubernetes.aio import client as k8s
from kubernetes.aio import config as k8s_config

from ..base import BackendError

# kind -> (API attribute, method suffix): `create_namespaced_job_without_preload_content`...
KINDS = {
    "Job": ("batch", "namespaced_job"),
    "Secret": ("core", "namespaced_secret"),
    "NetworkPolicy": ("networking", "namespaced_network_policy"),
    "Pod": ("core", "namespaced_pod"),
}
REQUEST_TIMEOUT = 60.0  # seconds, for every call but a followed log
MAX_RESPONSE = 64 * 1024**2  # bytes of one JSON answer (a list of a namespace's objects)
WATCH_SECONDS = 300  # the API server ends a watch after this; the watcher starts another


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
    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
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
        return (await self.listing(kind, selector))[0]

    async def listing(self, kind: str, selector: str) -> tuple[list[dict[str, Any]], str | None]:
        """The objects and the list's resourceVersion (where a watch of it starts)."""
        found = await self._json(
            self._method("list", kind)(self.namespace, label_selector=selector),
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
            response = await self._method("list", kind)(
                self.namespace,
                label_selector=selector,
                watch=True,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=WATCH_SECONDS,
                _request_timeout=None,
            )
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

    async def close(self) -> None:
        await self.api.close()


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
