"""The run's egress-proxy pod, as a Job: hardened as a node's pod, running our proxy.

Its container only waits (`sleep`, under tini): the proxy itself (egress/remote.py) is
started by the run's host over the exec API, so it holds no credential until the host
hands them over on its stdin, and it stops when the host's connection ends (the host
died, or the run is over), closing every node's way out with it. The pod is labelled
with the run and the role the NetworkPolicies select (network.py); `gc` finds its Job
as it finds a node's.

It runs under the run's OCI runtime (gVisor when the policy says so): it parses what
untrusted nodes send. Its only volume is a small memory /tmp (its key, loaded and
removed at once; brokered upstreams' CA bundles).
"""

from __future__ import annotations

from typing import Any

from ...execution import OWNER_LABEL, RUN_LABEL
from ...sandbox import INIT
from .job import job_manifest, resources
from .labels import ROLE_LABEL, label_value
from .names import PREFIX
from .network import PROXY_ROLE
from .security import container_security_context, pod_isolation, pod_security_context
from .settings import ClusterSettings, pinned_image

PROXY_IMAGE = "sandbox-orch/egress-proxy"
PROXY_CONTAINER = "proxy"
PROXY_USER = "10001:10001"  # the image's own user
PROXY_CPUS = 1.0
PROXY_MEMORY = 256 * 1024**2
TMP_SIZE = "16Mi"
# The Job's backstop if its host is gone without deleting it: the run's CA made its
# certificates valid for a day (egress/identity.py), so nothing it serves outlives that.
PROXY_DEADLINE = 24 * 3600


def proxy_job_name(run_id: str) -> str:
    return f"{PREFIX}-{run_id}-egress-proxy"


def proxy_argv(port: int) -> list[str]:
    """What the host execs in the proxy's container (the proxy, listening on `port`)."""
    return ["python3", "-m", "sandbox_orch.egress.remote", "--port", str(port)]


def proxy_job(
    run_id: str, owner: str, oci_runtime: str, settings: ClusterSettings
) -> dict[str, Any]:
    labels = {RUN_LABEL: label_value(run_id), ROLE_LABEL: PROXY_ROLE}
    annotations = {RUN_LABEL: run_id, OWNER_LABEL: owner}
    container = {
        "name": PROXY_CONTAINER,
        "image": pinned_image(settings, PROXY_IMAGE),
        "imagePullPolicy": "Always",
        "command": [*INIT, "sleep", "infinity"],
        "resources": resources(PROXY_CPUS, PROXY_MEMORY),
        "securityContext": container_security_context(PROXY_USER, oci_runtime),
        "ports": [{"name": "proxy", "containerPort": settings.proxy_port, "protocol": "TCP"}],
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp", "readOnly": False}],
        "stdin": False,
        "tty": False,
        "terminationMessagePolicy": "File",
    }
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        **pod_isolation(settings.user_namespaces and oci_runtime != "runsc"),
        "securityContext": pod_security_context(PROXY_USER, oci_runtime),
        "terminationGracePeriodSeconds": 0,
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": TMP_SIZE}}],
    }
    metadata = (labels, annotations)
    return job_manifest(
        proxy_job_name(run_id), metadata, pod, oci_runtime, PROXY_DEADLINE, settings
    )
