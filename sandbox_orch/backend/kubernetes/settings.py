"""What the operator configures for a cluster: nothing here comes from a workflow.

A policy names an OCI runtime (`runc`, `runsc`); a cluster offers RuntimeClasses with
names of its operator's choosing (`gvisor`, ...). The mapping is explicit and fails
closed: a runtime the operator did not map is an error, never silently the cluster's
default (which would run a gVisor policy's nodes under runc). Likewise images: the
cluster cannot see the images built on this host, so each one the policies allow is
mapped to a reference pinned by digest in a registry the cluster pulls from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..base import BackendError
from .names import legal_name

PINNED = re.compile(r"^[^\s@]+@sha256:[0-9a-f]{64}$")


class ManifestError(BackendError):
    """A node cannot be expressed on this cluster as configured (nothing is created)."""


@dataclass(frozen=True)
class ClusterSettings:
    # oci_runtime -> RuntimeClass name; None: the cluster's default runtime (no
    # runtimeClassName), which the operator must say explicitly.
    runtime_classes: Mapping[str, str | None]
    # Where the run's objects go (`--namespace`): one whose Pod Security admission
    # enforces "restricted"; named in every manifest, never the default namespace.
    namespace: str
    # image name as policies give it -> `registry/name@sha256:...`
    images: Mapping[str, str] = field(default_factory=dict)
    ttl_after_finished: int = 300  # a finished Job (and its pod) lingers this long at most
    proxy_port: int = 3128  # the run's egress-proxy pod listens here
    workspace_limit: int = 1024**3  # each mount's copy (a memory emptyDir), in bytes
    # runc pods in their own user namespace (hostUsers: false; see security.py). An
    # operator whose nodes cannot (Kubernetes < 1.33, kernel < 6.3, containerd < 2.0)
    # turns it off explicitly: the pods would fail to start otherwise, never run without.
    user_namespaces: bool = True


def checked_namespace(settings: ClusterSettings) -> str:
    if not legal_name(settings.namespace) or settings.namespace == "default":
        raise ManifestError(f"namespace {settings.namespace!r} is not one to run nodes in")
    return settings.namespace


def runtime_class(settings: ClusterSettings, oci_runtime: str) -> str | None:
    if oci_runtime not in settings.runtime_classes:
        raise ManifestError(
            f"OCI runtime {oci_runtime!r} has no RuntimeClass configured for this cluster"
        )
    return settings.runtime_classes[oci_runtime]


def pinned_image(settings: ClusterSettings, image: str) -> str:
    """The image's reference by digest: never by name, which could name another image."""
    reference = settings.images.get(image)
    if reference is None:
        raise ManifestError(f"image {image!r} has no pinned reference configured for this cluster")
    if not PINNED.match(reference):
        raise ManifestError(f"image {image!r} maps to {reference!r}, which is not pinned by digest")
    return reference
