"""Rules on secret grants: where a secret may go, which runtimes get it, whether it has a
source (SO201-SO208); and how it is delivered: in the node's environment, or brokered by
the egress proxy (SO209-SO212)."""

from __future__ import annotations

from typing import Any

from ..brokerpolicy import DEFAULT_METHODS, DEFAULT_PATHS
from ..yamlsafe import Loc
from .checking import AGENT_RUNTIMES, GENERAL_RUNTIMES, KNOWN_RUNTIMES, _Review
from .egress import _egress_address_checks, _split_host_port, _wildcard_scope


def _check_secrets(r: _Review) -> None:
    policy = r.policy
    for name, grant in (r.data.get("secrets") or {}).items():
        base: Loc = ("secrets", name)
        if "from_env" not in grant and "from_file" not in grant:
            r.add("SO208", base, f"secret {name} has no source")
        runtimes = grant.get("runtimes") or []
        if not runtimes:
            r.add("SO207", base, f"secret {name} names no runtime")
        for index, runtime in enumerate(runtimes):
            loc = (*base, "runtimes", index)
            if runtime in GENERAL_RUNTIMES:
                r.add("SO204", loc, f"secret {name} is granted to the {runtime} runtime")
            elif runtime not in KNOWN_RUNTIMES:
                r.add("SO205", loc, f"secret {name} is granted to {runtime!r}, which no preset is")
            if runtime in KNOWN_RUNTIMES and runtime not in policy.runtimes:
                r.add("SO206", loc, f"secret {name}: runtime {runtime} is not in `runtimes`")
        _check_delivery(r, name, grant, base)
        if "egress" not in grant:
            r.add("SO201", base, f"secret {name} has no egress list (nodes holding it: no egress)")
            continue
        hosts = set()
        wide_subdomains = False
        for index, entry in enumerate(grant["egress"]):
            loc = (*base, "egress", index)
            host, _ = _split_host_port(entry)
            hosts.add(host.lower())
            scope = _wildcard_scope(host)
            _egress_address_checks(r, entry, loc, f"secret {name}: ")
            if scope == "broad":
                r.add("SO202", loc, f"secret {name} may be sent to any host matching {entry}")
            elif scope == "subdomains":
                wide_subdomains = True
        if len(hosts) > 1 or wide_subdomains:
            shown = ", ".join(grant["egress"])
            r.add(
                "SO203", (*base, "egress"), f"secret {name} may go to more than one host: {shown}"
            )


def _check_delivery(r: _Review, name: str, grant: dict[str, Any], base: Loc) -> None:
    """In the environment (the node holds the value) or brokered (the proxy does)."""
    broker = grant.get("broker")
    if broker is None:
        if AGENT_RUNTIMES & set(grant.get("runtimes") or ()):
            r.add("SO209", base, f"secret {name} is in its agent's environment (not brokered)")
        else:
            r.add("SO210", base, f"secret {name} is in its node's environment (not brokered)")
        return
    where: Loc = (*base, "broker")
    if "ca_bundle" in broker:
        bundle = broker["ca_bundle"]
        r.add("SO211", (*where, "ca_bundle"), f"secret {name}: upstream verified by {bundle}")
    for index, path in enumerate(broker.get("paths", DEFAULT_PATHS)):
        if path == "/":
            loc = (*where, "paths", index) if "paths" in broker else where
            r.add("SO212", loc, f"secret {name} is added to any path of its upstream")
    for index, method in enumerate(broker.get("methods", DEFAULT_METHODS)):
        if method not in DEFAULT_METHODS:
            r.add("SO212", (*where, "methods", index), f"secret {name} is added to {method}s")
