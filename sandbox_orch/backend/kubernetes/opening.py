"""Opening a run's cluster: connect, check, and only then hand out the backend.

`open_backend` refuses (InfrastructureError, exit 3) before anything is created when the
namespace does not enforce Pod Security "restricted", a RuntimeClass the nodes need is
missing or unmapped, or a node needs what this backend does not do yet (checks.py).
`describe` is `doctor --backend kubernetes`'s report of the same facts.
"""

from __future__ import annotations

from collections.abc import Mapping

from ...errors import InfrastructureError
from ...planning import Plan
from ...sandbox import Sandbox
from ..base import BackendError
from .backend import KubernetesBackend
from .checks import namespace_problem, pod_security_labels, proxy_problem, unsupported
from .client import Cluster, connect
from .proxypod import PROXY_IMAGE
from .settings import ClusterSettings, ManifestError, checked_namespace, runtime_class


async def open_backend(
    settings: ClusterSettings,
    context: str | None,
    plan: Plan,
    sandboxes: Mapping[str, Sandbox],
    cluster: Cluster | None = None,
) -> KubernetesBackend:
    """A checked backend for running `plan` (`cluster`: a client already made, tests)."""
    problem = unsupported(plan, sandboxes) or proxy_problem(sandboxes, settings)
    if problem:
        raise InfrastructureError(problem)
    try:
        namespace = checked_namespace(settings)
        cluster = cluster or await connect(namespace, context)
    except BackendError as error:
        raise InfrastructureError(str(error)) from None
    try:
        await _check(cluster, settings, {s.oci_runtime for s in sandboxes.values()})
    except BaseException:
        await cluster.close()
        raise
    return KubernetesBackend(cluster, settings)


async def _check(cluster: Cluster, settings: ClusterSettings, runtimes: set[str]) -> None:
    try:
        problem = namespace_problem(settings.namespace, await cluster.namespace_object())
        if problem:
            raise InfrastructureError(problem)
        for oci in sorted(runtimes):
            name = runtime_class(settings, oci)
            if name is not None and await cluster.runtime_class(name) is None:
                raise InfrastructureError(
                    f"RuntimeClass {name!r} (for OCI runtime {oci!r}) does not exist on the "
                    "cluster; sandbox-orch never falls back to another runtime"
                )
    except (BackendError, ManifestError) as error:
        raise InfrastructureError(str(error)) from None


async def describe(cluster: Cluster, settings: ClusterSettings) -> list[str]:
    """doctor's lines: the namespace's Pod Security labels, each RuntimeClass mapped."""
    namespace = await cluster.namespace_object()
    labels = pod_security_labels(namespace)
    shown = ", ".join(f"{k}={v}" for k, v in labels.items()) or "none"
    lines = [f"namespace {settings.namespace}: Pod Security labels: {shown}"]
    problem = namespace_problem(settings.namespace, namespace)
    lines.append(f"namespace {settings.namespace}: {problem or 'enforces restricted: ok'}")
    for oci, name in sorted(settings.runtime_classes.items()):
        if name is None:
            lines.append(f"runtime {oci}: the cluster's default (no RuntimeClass)")
        else:
            found = await cluster.runtime_class(name) is not None
            lines.append(f"runtime {oci}: RuntimeClass {name} {'exists' if found else 'missing'}")
    if not settings.runtime_classes:
        lines.append("runtime: none mapped (--runtime-class OCI=CLASS)")
    pinned = PROXY_IMAGE in settings.images
    lines.append(
        f"egress: proxy image {PROXY_IMAGE} "
        + (
            "pinned: ok"
            if pinned
            else f"not pinned: runs with egress are refused (--image {PROXY_IMAGE}=...)"
        )
    )
    return lines


async def connected_backend(settings: ClusterSettings, context: str | None) -> KubernetesBackend:
    """A backend for `gc` (removing needs none of a run's checks)."""
    try:
        return KubernetesBackend(await connect(checked_namespace(settings), context), settings)
    except BackendError as error:
        raise InfrastructureError(str(error)) from None


async def doctor_lines(settings: ClusterSettings, context: str | None) -> list[str]:
    """`doctor --backend kubernetes`: connect, describe, close (exit 3 if unreachable)."""
    try:
        cluster = await connect(checked_namespace(settings), context)
    except BackendError as error:
        raise InfrastructureError(str(error)) from None
    try:
        return await describe(cluster, settings)
    except BackendError as error:
        raise InfrastructureError(str(error)) from None
    finally:
        await cluster.close()
