"""Admission: every node of a plan against the policy, before anything starts. Pure.

A node gets its effective sandbox only if everything it asks is granted; otherwise every
refusal of the run is collected and reported together (CONTRACT 1).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

from .agents import admission as agents
from .agents.prompts import PromptError, literal_size, split
from .artifacts.lifetimes import certain_peak
from .brokerpolicy import BrokerGrant
from .containerpaths import forbidden_target, forbidden_workdir
from .egress.grants import grant_problem, uncovered
from .envnames import denied_env
from .errors import InputRefused, Problem
from .gitpaths import MAX_GIT_PATHS, inside_git
from .mounts import (
    BindMount,
    Walk,
    grant_for,
    masks,
    never_mountable,
    resolve,
    through_symlink,
    via_symlink,
    walk,
)
from .planning import Plan, PlannedNode
from .policy import Policy, SecretGrant, shipped_granting
from .sandbox import Sandbox
from .secrets import source_problem
from .units import format_size
from .yamlsafe import Loc, dotted, kind_of

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
    walked: dict[Path, Walk] = {}  # each source is walked once, however many mount it

    def refuse_run(loc: Loc, message: str) -> None:
        problems.append(plan.document.problem(loc, message))

    agents.check_budget(plan.workflow.budget, policy.agents, ("budget",), refuse_run)
    for node in plan.nodes.values():

        def refuse(loc: Loc, message: str, node: PlannedNode = node) -> None:
            problems.append(plan.document.problem(loc, f"node {node.name!r}: {message}"))

        sandbox = admit_node(node, policy, refuse, base_dir, environ, walked)
        if sandbox is not None:
            sandboxes[node.name] = sandbox
    if problems:
        raise InputRefused(problems)
    return sandboxes


def admit_node(
    node: PlannedNode,
    policy: Policy,
    refuse: Refuse,
    base_dir: Path,
    environ: Mapping[str, str],
    walked: dict[Path, Walk] | None = None,
) -> Sandbox | None:
    before = _Tracked(refuse)
    secrets = _login(node, policy, environ)
    node = _without_api_egress(node, policy, secrets)
    _check_runtime(node, policy, before)
    _check_artifact_paths(node, before)
    _check_distinct_targets(node, policy, before)
    _check_artifacts_total(node, policy, before)
    _check_network(node, policy, before)
    _check_secrets(node, secrets, policy, before, environ)
    brokered = _check_brokered(node, secrets, policy, before)
    _check_setup(node, policy, secrets, brokered, before)
    _check_env(node, policy, before)
    mounts = _check_mounts(node, policy, base_dir, before, {} if walked is None else walked)
    _check_workdir(node, mounts, before)
    _check_nested_targets(node, mounts, before)
    cpus, memory, pids, timeout = _check_limits(node, policy, before)
    _check_prompt(node, policy, before)
    agents.check_node(node, policy.agents, before)
    if before.refused:  # the refusals say why
        return None
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
        prompt_limit=policy.limits.prompt,
        tmpfs=dict(policy.tmpfs),
        env={**node.env, **_broker_env(node, brokered)},
        workdir=node.request.workdir,
        mounts=mounts,
        egress=node.egress,
        secrets=secrets,
        brokered={name: grant.upstream for name, grant in brokered.items()},
        setup_argv=node.setup_argv,
        setup_egress=node.setup_egress,
        setup_timeout=node.request.setup.timeout if node.request.setup else None,
    )


class _Tracked:
    """Wraps `refuse` to know whether this node was refused anything."""

    def __init__(self, refuse: Refuse) -> None:
        self._refuse = refuse
        self.refused = False

    def __call__(self, loc: Loc, message: str) -> None:
        self.refused = True
        self._refuse(loc, message)


def _check_runtime(node: PlannedNode, policy: Policy, refuse: Refuse) -> None:
    runtime = node.runtime
    if runtime.preset and runtime.name not in policy.runtimes:
        message = f"runtime {runtime.name!r} is not granted by the policy"
        shipped = shipped_granting(runtime.name) if runtime.agent else None
        if shipped is not None and shipped != policy.name:
            message += f" (the shipped policy {shipped!r} grants it: --policy {shipped})"
        refuse((*node.loc, "runtime"), message)
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


def _check_distinct_targets(node: PlannedNode, policy: Policy, refuse: Refuse) -> None:
    """Two mounts at one place: the engine would refuse the container (exit 3); say it
    here. Paths are in normal form already, so `/w/` and `//w` are the same place."""
    taken: dict[str, str] = {path: "a tmpfs of the policy" for path in policy.tmpfs}
    places = [(("mounts", i, "target"), m.target) for i, m in enumerate(node.request.mounts)]
    places += [(("outputs", "artifacts", i, "path"), a.path) for i, a in enumerate(node.artifacts)]
    places += [(("inputs", i, "path"), a.path) for i, a in enumerate(node.inputs)]
    for loc, path in places:
        if path in taken:
            refuse((*node.loc, *loc), f"{path} is already the target of {taken[path]}")
        taken.setdefault(path, dotted(loc))


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


def _check_prompt(node: PlannedNode, policy: Policy, refuse: Refuse) -> None:
    """The prompt's own text (without the values of its expressions) within the policy's
    limit: else it could never launch."""
    if node.request.prompt is None:  # only agents have one (planning refuses the rest)
        return
    try:
        size = literal_size(split(node.request.prompt))
    except PromptError:
        return  # refused by planning, with its reason
    if size > policy.limits.prompt:
        refuse(
            (*node.loc, "prompt"),
            f"the prompt's text is {size} bytes, above the policy's prompt limit "
            f"({policy.limits.prompt} bytes)",
        )


def _check_network(node: PlannedNode, policy: Policy, refuse: Refuse) -> None:
    if not node.egress:
        return
    missing = set(uncovered(node.egress, policy.egress))  # exact, or under a wide suffix
    for index, target in enumerate(node.egress):
        if target not in missing:
            continue
        loc = _loc(node, "network", ("network", "egress", index))
        # A runtime's default or base URL: not checked by the workflow's schema.
        why = grant_problem(target)
        refuse(
            loc, f"egress: {why}" if why else f"egress to {target!r} is not granted by the policy"
        )


def _check_setup(
    node: PlannedNode,
    policy: Policy,
    secrets: tuple[str, ...],
    brokered: Mapping[str, BrokerGrant],
    refuse: Refuse,
) -> None:
    """Setup's egress is granted like the node's own; a secret in the node's environment
    is refused (setup code could read it from /proc/*/environ); brokered ones are fine
    (the proxy adds them only after setup). Setup's timeout is within the node's."""
    setup = node.request.setup
    if setup is None:
        return
    missing = set(uncovered(node.setup_egress, policy.egress))
    for index, target in enumerate(node.setup_egress):
        if target in missing:
            loc = (*node.loc, "setup", "network", "egress", index)
            refuse(loc, f"setup egress to {target!r} is not granted by the policy")
    for name in secrets:
        if name not in brokered:
            refuse(
                (*node.loc, "setup"),
                f"secret {name} is in the node's environment, which setup code could read: "
                "a node with setup gets only brokered secrets",
            )
    timeout = node.timeout or policy.defaults.timeout  # the node's, as _check_limits
    if setup.timeout is not None and setup.timeout > timeout:
        refuse(
            (*node.loc, "setup", "timeout"),
            f"setup timeout {setup.timeout:g}s is longer than the node's ({timeout:g}s)",
        )


def _login(node: PlannedNode, policy: Policy, environ: Mapping[str, str]) -> tuple[str, ...]:
    """The secrets a node gets: as asked; asked nothing, the first of its runtime's logins
    the policy grants to it and can read (a Claude subscription token instead of an API
    key), else the runtime's default (refused below, saying why)."""
    if "secrets" in node.request.model_fields_set:
        return node.secrets
    for name in node.runtime.logins:
        grant = policy.secrets.get(name)
        if grant is None or node.runtime.name not in grant.runtimes:
            continue
        egress = () if _brokers_login(node, grant) else node.egress
        if not uncovered(egress, grant.egress) and not source_problem(grant, environ):
            return (name,)
    return node.secrets


def _brokers_login(node: PlannedNode, grant: SecretGrant | None) -> bool:
    """Whether the node asks no network of its own and `grant`, one of its runtime's
    logins, is brokered: then it reaches its API through the broker, and needs neither
    its runtime's API host nor the gateway its own base-URL variable names (that
    variable is refused, _check_brokered: only that refusal is said)."""
    runtime = node.runtime
    return (
        grant is not None
        and grant.broker is not None
        and grant.name in (runtime.logins or runtime.secrets)
        and runtime.name in grant.runtimes
        and "network" not in node.request.model_fields_set
    )


def _without_api_egress(node: PlannedNode, policy: Policy, secrets: tuple[str, ...]) -> PlannedNode:
    """The node without its runtime's API host when its login is brokered."""
    if any(_brokers_login(node, policy.secrets.get(name)) for name in secrets):
        return dataclasses.replace(node, egress=())
    return node


def _check_brokered(
    node: PlannedNode, secrets: tuple[str, ...], policy: Policy, refuse: Refuse
) -> dict[str, BrokerGrant]:
    """The node's brokered secrets (granted to its runtime), each with the variable that
    tells the node where its broker is; refused when the node sets that variable itself
    (it would send the placeholder elsewhere, and the agent would not work)."""
    brokered: dict[str, BrokerGrant] = {}
    for index, name in enumerate(secrets):
        grant = policy.secrets.get(name)
        if grant is None or grant.broker is None or node.runtime.name not in grant.runtimes:
            continue
        variable = _base_url_env(node, grant.broker)
        if variable is None:
            loc = _loc(node, "secrets", ("secrets", index))
            message = (
                f"secret {name} is brokered, but runtime {node.runtime.name!r} has no "
                "base-URL variable: the policy's broker.base_url_env must name one"
            )
            refuse(loc, message)
        elif variable in node.env:
            message = (
                f"secret {name} is brokered to {grant.broker.upstream}: sandbox-orch sets "
                f"{variable} to the node's broker, the node cannot set it"
            )
            refuse((*node.loc, "env", variable), message)
        else:
            brokered[name] = grant.broker
    return brokered


def _base_url_env(node: PlannedNode, broker: BrokerGrant) -> str | None:
    return broker.base_url_env or node.runtime.base_url_env


def _broker_env(node: PlannedNode, brokered: Mapping[str, BrokerGrant]) -> dict[str, str]:
    """Where the node's API is: its broker, with the path its CLI expects after the host
    (Codex's provider wants /v1). The secrets' placeholders are set when it starts."""
    env = {}
    for broker in brokered.values():
        from .egress.broker import base_url  # here: the proxy's event loop, h11, TLS

        variable = _base_url_env(node, broker)
        assert variable is not None  # refused otherwise
        env[variable] = base_url(broker.upstream) + node.runtime.base_url_path
    return env


def _check_secrets(
    node: PlannedNode,
    secrets: tuple[str, ...],
    policy: Policy,
    refuse: Refuse,
    environ: Mapping[str, str],
) -> None:
    logins = node.runtime.logins
    defaulted = bool(logins) and "secrets" not in node.request.model_fields_set
    hint = f" ({node.runtime.name} logs in with any one of {', '.join(logins)})"
    hint = hint if defaulted else ""
    for index, name in enumerate(secrets):
        loc = _loc(node, "secrets", ("secrets", index))
        grant = policy.secrets.get(name)
        if grant is None:
            refuse(loc, f"secret {name} is not granted by the policy{hint}")
        elif node.runtime.name not in grant.runtimes:
            refuse(loc, f"secret {name} is not granted to runtime {node.runtime.name!r}{hint}")
        elif wider := sorted(set(uncovered(node.egress, grant.egress))):
            # The secret could leave through a host it was never meant for.
            refuse(loc, f"secret {name} cannot go to a node with egress to {', '.join(wider)}")
        elif problem := source_problem(grant, environ):
            refuse(loc, problem + hint)


def _loc(node: PlannedNode, key: str, written: Loc) -> Loc:
    """Where a request is in the file: as written, or (a runtime default) the runtime."""
    return (*node.loc, *written) if key in node.request.model_fields_set else (*node.loc, "runtime")


def _check_mounts(
    node: PlannedNode,
    policy: Policy,
    base_dir: Path,
    refuse: Refuse,
    walked: dict[Path, Walk],
) -> tuple[BindMount, ...]:
    mounts = []
    targets = [m.target for m in node.request.mounts]  # and volumes: all cover what is below
    targets += [a.path for a in node.artifacts] + [i.path for i in node.inputs]
    for index, mount in enumerate(node.request.mounts):
        loc = (*node.loc, "mounts", index)
        try:
            path = resolve(mount.source, base_dir)
        except OSError as error:  # /proc/1/root: a link we may not follow
            refuse((*loc, "source"), f"mount {mount.source!r}: cannot resolve: {error.strerror}")
            continue
        why = (
            never_mountable(path, mount.mode)
            or (None if path.exists() else "does not exist")
            or grant_for(path, mount.mode, policy.mounts, base_dir)
            or _walk(path, walked).problem
            or (_git_problem(path, walked[path]) if mount.mode == "rw" else None)
        )
        bad_target = forbidden_target(mount.target)
        if why:
            refuse((*loc, "source"), f"mount {mount.source!r} ({path}): {why}")
        if bad_target:
            refuse((*loc, "target"), f"mount target {mount.target!r}: {bad_target}")
        if not why and not bad_target:
            hidden = masks(path, mount.target)
            kept = () if mount.mode == "ro" else _kept(walked[path].git, mount.target, targets)
            mounts.append(BindMount(str(path), mount.target, mount.mode == "ro", hidden, kept))
    return tuple(mounts)


def _walk(path: Path, walked: dict[Path, Walk]) -> Walk:
    if path not in walked:
        walked[path] = walk(path)
    return walked[path]


def _git_problem(path: Path, found: Walk) -> str | None:
    """Writable, a git directory is code execution on the host at its next git command."""
    if gitdir := inside_git(path):
        return f"{gitdir} is a git directory (the host's git runs its hooks); mount it read-only"
    if len(found.git) > MAX_GIT_PATHS:
        return f"has more than {MAX_GIT_PATHS} git directories to keep read-only; mount less"
    return None


def _kept(git: tuple[str, ...], target: str, targets: list[str]) -> tuple[str, ...]:
    """Git's paths to bind again read-only, except where another mount of the node, deeper
    than this one, sits over them (that mount decides what is there). `target` is a granted
    one: in normal form and never / (refused), so it ends in no slash."""
    deeper = [other for other in targets if _below(other, target)]  # '' (the same) is not
    covered = [rel for rel in git for o in deeper if _below(f"{target}/{rel}", o) is not None]
    return tuple(rel for rel in git if rel not in covered)


def _check_env(node: PlannedNode, policy: Policy, refuse: Refuse) -> None:
    for name, value in node.env.items():
        loc = (*node.loc, "env", name)
        if not name or "=" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
            refuse(loc, f"environment name {name!r} is not allowed")
        elif why := denied_env(name, policy.env_deny):
            refuse(loc, f"environment variable {name} is on the deny list ({why})")
        elif "\x00" in value:
            refuse(loc, "environment values cannot contain NUL")


def _check_workdir(node: PlannedNode, mounts: tuple[BindMount, ...], refuse: Refuse) -> None:
    """Never in /proc, /sys or /dev (nor what reaches them, CVE-2024-21626), and never
    through a symlink: the engine follows one when it enters the working directory, and
    `/work/x -> /proc/self/fd/7` would reach the host. So below a mount's root the path
    must hold no symlink now (a read-only bind), or be somewhere no node can write: not
    inside a read-write bind, an artifact or an input (nodes write those while they run)."""
    workdir = node.request.workdir
    if workdir is None:
        return
    why = forbidden_workdir(workdir)
    writable = [(m.target, "a read-write mount") for m in mounts if not m.read_only]
    writable += [(a.path, "an artifact") for a in node.artifacts]
    writable += [(i.path, "an input") for i in node.inputs]
    for target, what in writable:
        if why is None and _below(workdir, target):  # '' (the root itself) is fine
            why = f"{workdir} is inside {what} at {target}, where a node could put a symlink"
    for mount in mounts:
        rest = None if why else _below(workdir, mount.target)
        if rest and via_symlink(os.path.join(mount.source, rest)):
            why = f"{workdir} goes through a symlink in the mounted {mount.source}"
    if why:
        refuse((*node.loc, "workdir"), why)


def _check_nested_targets(node: PlannedNode, mounts: tuple[BindMount, ...], refuse: Refuse) -> None:
    """A mount, artifact or input placed below another of the node's is reached through
    what is at that other place when the container is made, and the engine follows a
    symlink there: with `/w/link -> /usr/local/bin`, a mount at `/w/link/x` landed at
    /usr/local/bin/x, past the check of the path as written. So nothing is placed below an
    artifact or an input (nodes write them, no one can look first), and below a mount
    only where its host directory holds no symlink on the way (checked again just before
    the container starts, mounts.moved: a read-write mount's may change meanwhile)."""
    places = [(("mounts", i, "target"), m.target) for i, m in enumerate(node.request.mounts)]
    places += [(("outputs", "artifacts", i, "path"), a.path) for i, a in enumerate(node.artifacts)]
    places += [(("inputs", i, "path"), a.path) for i, a in enumerate(node.inputs)]
    volumes = [(a.path, "an artifact") for a in node.artifacts]
    volumes += [(i.path, "an input") for i in node.inputs]
    for loc, path in places:
        why = next(
            (
                f"{path} is inside {what} at {target}, where a node could put a symlink "
                "the engine would follow"
                for target, what in volumes
                if _below(path, target)  # '' (the same place) is another refusal's
            ),
            None,
        )
        if why := why or through_symlink(path, mounts):
            refuse((*node.loc, *loc), why)


def _below(path: str, root: str) -> str | None:
    """`path` relative to `root` ('' when equal), or None when it is not inside."""
    if path == root:
        return ""
    prefix = root.rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else None


def _check_limits(
    node: PlannedNode, policy: Policy, refuse: Refuse
) -> tuple[float, int, int, float]:
    """The limits asked (or the policy's defaults), each refused above its ceiling."""
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
    for key, value, most, show in checks:
        if value > most:
            loc = (*node.loc, "timeout") if key == "timeout" else (*node.loc, "resources", key)
            refuse(loc, f"{key} {show(value)} is above the policy ceiling {show(most)}")
    return cpus, memory, pids, timeout


def check_report_files(
    files: Mapping[str, Path | None],
    sandboxes: Mapping[str, Sandbox],
    workspace: Path | None = None,
) -> None:
    """The run's own report files (--results, --junit): where one exists, a regular file;
    never inside what a node of the run sees (a mount's source, outside its masks, or the
    workspace `single` copies in), where a node would read the last run's report there
    and, read-write, could plant one in its place. InputRefused naming both."""
    seen = [
        (Path(m.source), _masked(m), f"node {name!r} mounts {m.source}")
        for name, sandbox in sandboxes.items()
        for m in sandbox.mounts
    ]
    if workspace is not None:
        seen.append((workspace.resolve(), (), f"the workspace {workspace} is copied into the node"))
    problems = []
    for option, path in files.items():
        if path is None:
            continue
        if why := _not_a_report_file(path):
            problems.append(Problem(str(path), None, "", f"{option}: {why}"))
            continue
        real = Path(os.path.realpath(path))
        for source, hidden, who in seen:
            inside = real == source or source in real.parents
            if inside and not any(h == real or h in real.parents for h in hidden):
                why = f"{option} lies inside what a node sees: {who}; write it elsewhere"
                problems.append(Problem(str(path), None, "", why))
                break
    if problems:
        raise InputRefused(problems)


def _masked(mount: BindMount) -> tuple[Path, ...]:
    """The host paths of a mount's masks (hidden from the node). An admitted mount's target
    is in normal form and never / (refused), so a mask is the target, `/` and the rest."""
    return tuple(Path(mount.source) / m[len(mount.target) + 1 :] for m in mount.masks)


def _not_a_report_file(path: Path) -> str | None:
    """A report is replaced atomically: a directory (or anything not a regular file) in
    its place would fail only after the run, when it is written."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    except OSError as error:
        return f"cannot write: {error.strerror}"
    return None if stat.S_ISREG(mode) else f"not a regular file ({kind_of(mode)})"
