"""Admission: every node of a plan against the policy, before anything starts. Pure.

A node gets its effective sandbox only if everything it asks is granted; otherwise every
refusal of the run is collected and reported together (CONTRACT 1).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from .artifacts.lifetimes import certain_peak
from .errors import InputRefused, Problem
from .mounts import BindMount, forbidden_target, grant_for, never_mountable, resolve
from .planning import Plan, PlannedNode
from .policy import Policy
from .sandbox import Sandbox
from .secrets import source_problem
from .units import format_size
from .yamlsafe import Loc

# Names that change how a program loads code or where it connects: never passed to a
# node, whatever the policy says (compared case-insensitively).
DENIED_ENV = frozenset(
    {
        "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "BASH_ENV", "ENV", "NODE_OPTIONS",
        "NODE_PATH", "PYTHONSTARTUP", "PYTHONPATH", "PERL5OPT", "PATH", "HTTP_PROXY",
        "HTTPS_PROXY", "FTP_PROXY", "ALL_PROXY", "NO_PROXY",
    }
)  # fmt: skip

# Requests that this version cannot yet honour safely are refused, never ignored.
Refuse = Callable[[Loc, str], None]


def admit(
    plan: Plan, policy: Policy, environ: Mapping[str, str] | None = None
) -> dict[str, Sandbox]:
    """Each node's effective sandbox, or InputRefused with every refusal. `environ` is
    where secrets' sources are checked (the orchestrator's environment by default)."""
    environ = os.environ if environ is None else environ
    problems: list[Problem] = []
    sandboxes: dict[str, Sandbox] = {}
    base_dir = Path(plan.document.path).resolve().parent  # mount sources are relative to it
    for node in plan.nodes.values():

        def refuse(loc: Loc, message: str, node: PlannedNode = node) -> None:
            problems.append(plan.document.problem(loc, f"node {node.name!r}: {message}"))

        sandbox = admit_node(node, policy, refuse, base_dir, environ)
        if sandbox is not None:
            sandboxes[node.name] = sandbox
    if problems:
        raise InputRefused(problems)
    return sandboxes


def admit_node(
    node: PlannedNode, policy: Policy, refuse: Refuse, base_dir: Path, environ: Mapping[str, str]
) -> Sandbox | None:
    before = _Counter(refuse)
    _check_runtime(node, policy, before)
    _check_artifact_paths(node, before)
    _check_artifacts_total(node, policy, before)
    _check_network(node, policy, before)
    _check_secrets(node, policy, before, environ)
    _check_env(node, policy, before)
    _check_workdir(node, before)
    mounts = _check_mounts(node, policy, base_dir, before)
    limits = _check_limits(node, policy, before)
    if before.count or limits is None:
        return None
    cpus, memory, pids, timeout = limits
    return Sandbox(
        image=node.runtime.image,
        user=policy.user,
        oci_runtime=policy.oci_runtime,
        cpus=cpus,
        memory=memory,
        memory_ceiling=policy.limits.memory,
        pids=pids,
        timeout=timeout,
        output_limit=policy.limits.output,
        artifact_limit=policy.limits.artifacts,
        tmpfs=dict(policy.tmpfs),
        env=dict(node.env),
        workdir=node.request.workdir,
        mounts=mounts,
        egress=node.egress,
        secrets=node.secrets,
    )


class _Counter:
    """Wraps `refuse` to know whether this node was refused anything."""

    def __init__(self, refuse: Refuse) -> None:
        self._refuse = refuse
        self.count = 0

    def __call__(self, loc: Loc, message: str) -> None:
        self.count += 1
        self._refuse(loc, message)


def _check_runtime(node: PlannedNode, policy: Policy, refuse: Refuse) -> None:
    runtime = node.runtime
    if runtime.preset and runtime.name not in policy.runtimes:
        refuse((*node.loc, "runtime"), f"runtime {runtime.name!r} is not granted by the policy")
    if not runtime.preset and not any(fnmatch.fnmatchcase(runtime.image, p) for p in policy.images):
        message = f"image {runtime.image!r} of runtime {runtime.name!r} is not granted"
        refuse(("runtimes", runtime.name, "image"), message)


def _check_artifact_paths(node: PlannedNode, refuse: Refuse) -> None:
    """Artifact volumes are mounts too: never over system paths."""
    places = [(("outputs", "artifacts", i, "path"), a.path) for i, a in enumerate(node.artifacts)]
    places += [(("inputs", i, "path"), a.path) for i, a in enumerate(node.inputs)]
    for loc, path in places:
        if why := forbidden_target(path):
            refuse((*node.loc, *loc), f"artifact path {path!r}: {why}")


def _check_artifacts_total(node: PlannedNode, policy: Policy, refuse: Refuse) -> None:
    """A node whose own volumes and inputs are more than the run may hold at once can
    never run as planned (a retry's volumes replace, never add to, the last attempt's)."""
    cap, total = policy.limits.artifacts, policy.limits.artifacts_total
    peak = certain_peak(node, cap)
    if node.artifacts and peak > total:
        loc = (*node.loc, "outputs", "artifacts")
        count = len(node.artifacts), len({(i.producer, i.name) for i in node.inputs})
        refuse(
            loc,
            f"its {count[0]} artifact(s) and {count[1]} input(s) hold {format_size(peak)} at "
            f"once ({format_size(cap)} each), above the policy's artifacts_total "
            f"({format_size(total)})",
        )


def _check_network(node: PlannedNode, policy: Policy, refuse: Refuse) -> None:
    for index, target in enumerate(node.egress):
        if target not in policy.egress:
            loc = _loc(node, "network", ("network", "egress", index))
            refuse(loc, f"egress to {target!r} is not granted by the policy")


def _check_secrets(
    node: PlannedNode, policy: Policy, refuse: Refuse, environ: Mapping[str, str]
) -> None:
    egress = set(node.egress)
    for index, name in enumerate(node.secrets):
        loc = _loc(node, "secrets", ("secrets", index))
        grant = policy.secrets.get(name)
        if grant is None:
            refuse(loc, f"secret {name} is not granted by the policy")
        elif node.runtime.name not in grant.runtimes:
            refuse(loc, f"secret {name} is not granted to runtime {node.runtime.name!r}")
        elif wider := sorted(egress - set(grant.egress)):
            # The secret could leave through a host it was never meant for.
            refuse(loc, f"secret {name} cannot go to a node with egress to {', '.join(wider)}")
        elif problem := source_problem(grant, environ):
            refuse(loc, problem)


def _loc(node: PlannedNode, key: str, written: Loc) -> Loc:
    """Where a request is in the file: as written, or (a runtime default) the runtime."""
    return (*node.loc, *written) if key in node.request.model_fields_set else (*node.loc, "runtime")


def _check_mounts(
    node: PlannedNode, policy: Policy, base_dir: Path, refuse: Refuse
) -> tuple[BindMount, ...]:
    mounts = []
    for index, mount in enumerate(node.request.mounts):
        loc = (*node.loc, "mounts", index)
        path = resolve(mount.source, base_dir)
        why = (
            never_mountable(path, mount.mode)
            or (None if path.exists() else "does not exist")
            or grant_for(path, mount.mode, policy.mounts, base_dir)
        )
        bad_target = forbidden_target(mount.target)
        if why:
            refuse((*loc, "source"), f"mount {mount.source!r} ({path}): {why}")
        if bad_target:
            refuse((*loc, "target"), f"mount target {mount.target!r}: {bad_target}")
        if not why and not bad_target:
            mounts.append(BindMount(str(path), mount.target, read_only=mount.mode == "ro"))
    return tuple(mounts)


def _check_env(node: PlannedNode, policy: Policy, refuse: Refuse) -> None:
    denied = DENIED_ENV | {name.upper() for name in policy.env_deny}
    for name, value in node.env.items():
        loc = (*node.loc, "env", name)
        if not name or "=" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
            refuse(loc, f"environment name {name!r} is not allowed")
        elif name.upper() in denied or name.upper().startswith("LD_"):
            refuse(loc, f"environment variable {name} is on the deny list")
        elif "\x00" in value:
            refuse(loc, "environment values cannot contain NUL")


def _check_workdir(node: PlannedNode, refuse: Refuse) -> None:
    workdir = node.request.workdir
    if workdir and (workdir == "/proc" or workdir.startswith("/proc/")):
        refuse((*node.loc, "workdir"), "a working directory under /proc is not allowed")


def _check_limits(
    node: PlannedNode, policy: Policy, refuse: Refuse
) -> tuple[float, int, int, float] | None:
    ceiling, default = policy.limits, policy.defaults
    asked = node.resources
    cpus = asked.cpus or default.cpus
    memory = asked.memory or default.memory
    pids = asked.pids or default.pids
    timeout = node.timeout or default.timeout
    checks = [
        ("cpus", cpus, ceiling.cpus, str),
        ("memory", memory, ceiling.memory, format_size),
        ("pids", pids, ceiling.pids, str),
        ("timeout", timeout, ceiling.timeout, lambda s: f"{s:g}s"),
    ]
    over = False
    for key, value, most, show in checks:
        if value > most:
            loc = (*node.loc, "timeout") if key == "timeout" else (*node.loc, "resources", key)
            refuse(loc, f"{key} {show(value)} is above the policy ceiling {show(most)}")
            over = True
    return None if over else (cpus, memory, pids, timeout)
