"""One API call by path through the official client's ApiClient (or its websocket
subclass, for exec): its kubeconfig, authentication and TLS, none of its generated API
classes, whose imports load every model they name (3 s of a command's start)."""

from __future__ import annotations

from typing import Any

from kubernetes.aio.client.api_client import ApiClient

Query = list[tuple[str, Any]]  # a name may repeat (exec's `command`)


async def api_call(
    api: ApiClient,
    method: str,
    path: str,
    path_params: dict[str, str],
    query: Query | None = None,
    headers: dict[str, str] | None = None,
    body: Any = None,
    timeout: float | None = None,
) -> Any:
    """The raw answer: an aiohttp response, or for a WsApiClient the websocket's
    connecting context (await it). `{name}`s in `path` are filled from `path_params`."""
    serialized = await api.param_serialize(
        method=method,
        resource_path=path,
        path_params=path_params,
        query_params=query or [],
        header_params={"Accept": "application/json", **(headers or {})},
        body=body,
        auth_settings=["BearerToken"],
    )
    answer = await api.call_api(*serialized, _preload_content=False, _request_timeout=timeout)
    return answer.response
