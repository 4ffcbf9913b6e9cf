"""Rules on runtimes and isolation: agents under gVisor, runc, the container user, tmpfs
(SO301-SO304, SO603, SO701, and SO610 for tmpfs)."""

from __future__ import annotations

import posixpath
from dataclasses import fields

from ..policy import Policy
from ..units import format_size
from ..yamlsafe import Loc
from .checking import AGENT_RUNTIMES, KNOWN_RUNTIMES, _Review
from .limits import _HIGH


def _check_runtimes(r: _Review) -> None:
    for index, name in enumerate(r.data.get("runtimes") or ()):
        if name not in KNOWN_RUNTIMES:
            r.add("SO701", ("runtimes", index), f"runtime {name!r} is not a preset")


def _check_isolation(r: _Review) -> None:
    policy = r.policy
    agents = [(i, n) for i, n in enumerate(r.data.get("runtimes") or ()) if n in AGENT_RUNTIMES]
    written = r.has(("isolation", "oci_runtime"))
    runtime_loc: Loc = ("isolation", "oci_runtime") if written else ("isolation",)
    if agents and policy.oci_runtime != "runsc":
        names = ", ".join(n for _, n in agents)
        loc = runtime_loc if written else ("runtimes", agents[0][0])
        r.add("SO301", loc, f"agent runtimes ({names}) run under {policy.oci_runtime}, not gVisor")
    elif policy.oci_runtime == "runc" and (policy.runtimes or policy.images):
        r.add("SO302", runtime_loc, "nodes run under runc (shared host kernel)")
    user = r.data.get("isolation", {}).get("user")
    if user is not None:
        uid, gid = (int(part) for part in user.split(":"))
        if min(uid, gid) < 10000:
            r.add("SO303", ("isolation", "user"), f"container user {user} is below 10000")
    for path, size in policy.tmpfs.items():
        loc = ("isolation", "tmpfs", path)
        top = posixpath.normpath(path).lstrip("/").split("/")[0]
        if top in _SYSTEM_TMPFS:
            r.add("SO304", loc, f"tmpfs over the system directory {path}")
        if size > _HIGH["tmpfs"]:
            r.add(
                "SO610",
                loc,
                f"tmpfs {path} of {format_size(size)} (above {format_size(_HIGH['tmpfs'])})",
                why="tmpfs lives in the host's memory: a node can fill it to exhaust the "
                "host for every other run.",
                fix="Keep tmpfs small (64m is plenty for /tmp); write bulk data to artifacts.",
            )
    missing = [k for k in ("oci_runtime", "user", "tmpfs") if not r.has(("isolation", k))]
    if missing:
        builtin = _builtin_isolation()
        shown = ", ".join(f"{k} {builtin[k]}" for k in missing)
        state = "partial" if r.has(("isolation",)) else "not set"
        r.add("SO603", ("isolation",), f"isolation {state}: the built-in values apply: {shown}")


def _builtin_isolation() -> dict[str, str]:
    """What a policy gets where `isolation` says nothing (the Policy dataclass defaults)."""
    defaults = {f.name: f for f in fields(Policy)}
    tmpfs = defaults["tmpfs"].default_factory()  # type: ignore[misc]
    return {
        "oci_runtime": str(defaults["oci_runtime"].default),
        "user": str(defaults["user"].default),
        "tmpfs": ", ".join(f"{path} {format_size(size)}" for path, size in tmpfs.items()),
    }


_SYSTEM_TMPFS = frozenset(
    {
        "etc",
        "usr",
        "bin",
        "sbin",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "proc",
        "sys",
        "dev",
        "boot",
        "",
    }
)
