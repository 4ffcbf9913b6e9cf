"""Every finding of a policy: runs each rule group over it."""

from __future__ import annotations

from ..policy import Policy
from .agents import _check_agents
from .checking import _Review
from .egress import _check_network
from .images import _check_images
from .isolation import _check_isolation, _check_runtimes
from .limits import _check_limits
from .model import Finding
from .mounts import _check_mounts
from .secrets import _check_secrets


def review(policy: Policy) -> list[Finding]:
    """Every finding of the policy, most severe first, then by line."""
    r = _Review(policy)
    _check_runtimes(r)
    _check_isolation(r)
    _check_network(r)
    _check_secrets(r)
    _check_mounts(r)
    _check_images(r)
    _check_limits(r)
    _check_agents(r)
    return sorted(r.findings, key=Finding.sort_key)
