"""A node's environment in its pod: no secret value is ever in a manifest.

Each secret the node was granted is a reference to a key of the node's own Secret (by
name); the backend creates that Secret from the values read when the node starts and
deletes it with the node's Job. A brokered secret's key holds only its placeholder, as
on Docker: the real value goes to the egress proxy, never into the pod.

Egress: the node reaches its proxy at 127.0.0.1:3128, as on Docker (PROXY_URL and the
brokers' base URLs are unchanged), where `sandbox-orch-egress` listens and forwards to the
run's egress-proxy pod, whose address is in SANDBOX_ORCH_EGRESS_PROXY (a TCP mode of the
wrapper, instead of Docker's per-node Unix socket).
"""

from __future__ import annotations

import re
from typing import Any

from ...egress import PROXY_URL
from ...sandbox import Sandbox
from .settings import ManifestError

PROXY_ADDRESS_ENV = "SANDBOX_ORCH_EGRESS_PROXY"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
# What every supported version's API server takes (its relaxed rule, any printable ASCII
# but `=`, is the default only from 1.34); a Secret's keys are narrower still.
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


def has_egress(sandbox: Sandbox) -> bool:
    """The node talks to the run's proxy: egress grants, a broker, or a setup phase."""
    return bool(sandbox.egress or sandbox.brokered or sandbox.setup_argv)


def node_env(sandbox: Sandbox, secret: str, proxy: str | None) -> list[dict[str, Any]]:
    """The container's `env`: plain values, then the proxy's, then secret references."""
    plain = {"HOME": "/tmp", **sandbox.env}  # a writable HOME: the root is read-only
    if has_egress(sandbox):
        if proxy is None:
            raise ValueError("a node with egress needs the run's egress-proxy address")
        plain.update(dict.fromkeys(PROXY_VARIABLES, PROXY_URL))
        plain["NO_PROXY"] = plain["no_proxy"] = ""
        plain[PROXY_ADDRESS_ENV] = proxy
    for name in [*plain, *sandbox.secrets]:
        if not ENV_NAME.match(name) or (name in sandbox.secrets and not SECRET_KEY.match(name)):
            raise ManifestError(f"environment name {name!r} is not one Kubernetes 1.33 accepts")
    # A secret's reference wins over any plain variable of its name (none is left).
    env: list[dict[str, Any]] = [
        {"name": k, "value": v} for k, v in plain.items() if k not in sandbox.secrets
    ]
    for name in sandbox.secrets:
        reference = {"name": secret, "key": name, "optional": False}
        env.append({"name": name, "valueFrom": {"secretKeyRef": reference}})
    return env
