"""`--against`: what changing from one policy to another widens, narrows or otherwise
changes, located in the file where it is written."""

from __future__ import annotations

import fnmatch
import posixpath
from collections.abc import Callable, Iterable
from typing import Any

from ..egress.grants import uncovered
from ..policy import Limits, Policy
from ..units import format_size
from ..yamlsafe import Loc, dotted
from .agent_changes import compare_agents
from .limits import _DEFAULT_KEYS, _LIMIT_KEYS, _show
from .model import Change


class _Diff:
    def __init__(self, old: Policy, new: Policy) -> None:
        self.old, self.new = old, new
        self.changes: list[Change] = []

    def _add(self, direction: str, area: str, summary: str, policy: Policy, loc: Loc) -> None:
        doc = policy.document
        self.changes.append(
            Change(direction, area, summary, doc.path, doc.line_of(loc), dotted(loc))
        )

    def widens(self, area: str, summary: str, loc: Loc) -> None:
        self._add("widens", area, summary, self.new, loc)

    def narrows(self, area: str, summary: str, loc: Loc, *, removed: bool = False) -> None:
        self._add("narrows", area, summary, self.old if removed else self.new, loc)

    def widens_removed(self, area: str, summary: str, loc: Loc) -> None:
        """A widening that is a removal (e.g. an env deny entry): located in the old file."""
        self._add("widens", area, summary, self.old, loc)

    def changes_(self, area: str, summary: str, loc: Loc) -> None:
        self._add("changes", area, summary, self.new, loc)


Covered = Callable[[str, Iterable[str]], bool]


def _covered(item: str, patterns: Iterable[str]) -> bool:
    return any(item == p or fnmatch.fnmatchcase(item, p) for p in patterns)


def _granted(entry: str, grants: Iterable[str]) -> bool:
    """An egress entry is covered as admission covers it: exactly, or under a suffix."""
    return not uncovered([entry], grants)


def _list_of(policy: Policy, *path: str) -> list[Any]:
    data: Any = policy.document.data
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    return list(data or ())


def _compare_patterns(
    d: _Diff, area: str, noun: str, path: tuple[str, ...], covered: Covered = _covered
) -> None:
    old, new = _list_of(d.old, *path), _list_of(d.new, *path)
    for index, item in enumerate(new):
        if not covered(item, old):
            d.widens(area, f"{noun} {item} granted", (*path, index))
    for index, item in enumerate(old):
        if not covered(item, new):
            d.narrows(area, f"{noun} {item} no longer granted", (*path, index), removed=True)


_ACCESS = ("no access", "ro", "rw")  # rw reads too: each level includes the ones before


def _mount_table(policy: Policy) -> dict[str, tuple[int, int]]:
    """Normalised source -> (index of its first grant, access level 0/1/2)."""
    table: dict[str, tuple[int, int]] = {}
    for index, grant in enumerate(_list_of(policy, "mounts")):
        key = posixpath.normpath(grant["source"])
        level = 2 if "rw" in grant["modes"] else 1 if "ro" in grant["modes"] else 0
        first, before = table.get(key, (index, 0))
        table[key] = (first, max(before, level))
    return table


def _compare_mounts(d: _Diff) -> None:
    old, new = _mount_table(d.old), _mount_table(d.new)
    for source, (index, level) in new.items():
        before = old.get(source, (index, 0))[1]
        if source not in old and level:
            loc: Loc = ("mounts", index, "source")
            d.widens("mounts", f"mount {source} granted ({_ACCESS[level]})", loc)
        elif level > before:
            summary = f"mount {source} {_ACCESS[before]} -> {_ACCESS[level]}"
            d.widens("mounts", summary, ("mounts", index, "modes"))
        elif level < before:
            summary = f"mount {source} {_ACCESS[before]} -> {_ACCESS[level]}"
            d.narrows("mounts", summary, ("mounts", index, "modes"))
    for source, (index, level) in old.items():
        if source not in new and level:
            loc = ("mounts", index, "source")
            d.narrows("mounts", f"mount {source} no longer granted", loc, removed=True)


def _compare_secrets(d: _Diff) -> None:
    """A node gets a secret only if its runtime is named and its egress lies within the
    secret's egress list (a missing list is an empty one): more of either widens."""
    old = d.old.document.data.get("secrets") or {}
    new = d.new.document.data.get("secrets") or {}
    for name, grant in new.items():
        base: Loc = ("secrets", name)
        runtimes, egress = grant.get("runtimes") or [], grant.get("egress") or []
        if name not in old:
            to = ", ".join(runtimes) or "no runtime"
            shown = f"to {to}; egress {', '.join(egress) or 'none'}"
            d.widens("secrets", f"secret {name} granted ({shown})", base)
            continue
        before = old[name]
        runtimes_before = before.get("runtimes") or []
        egress_before = before.get("egress") or []
        for index, runtime in enumerate(runtimes):
            if runtime not in runtimes_before:
                loc = (*base, "runtimes", index)
                d.widens("secrets", f"secret {name} now granted to {runtime}", loc)
        for index, runtime in enumerate(runtimes_before):
            if runtime not in runtimes:
                loc = (*base, "runtimes", index)
                summary = f"secret {name} no longer granted to {runtime}"
                d.narrows("secrets", summary, loc, removed=True)
        for index, entry in enumerate(egress):
            if not _granted(entry, egress_before):
                loc = (*base, "egress", index)
                d.widens("secrets", f"secret {name} may now be sent to {entry}", loc)
        for index, entry in enumerate(egress_before):
            if not _granted(entry, egress):
                loc = (*base, "egress", index)
                summary = f"secret {name} no longer sent to {entry}"
                d.narrows("secrets", summary, loc, removed=True)
        for key in ("from_env", "from_file"):
            if grant.get(key) != before.get(key):
                shown = f"{before.get(key) or '-'} -> {grant.get(key) or '-'}"
                d.changes_("secrets", f"secret {name}: {key} {shown}", (*base, key))
        _compare_delivery(d, name, before.get("broker"), grant.get("broker"))
    for name in old:
        if name not in new:
            summary = f"secret {name} no longer granted"
            d.narrows("secrets", summary, ("secrets", name), removed=True)


def _compare_delivery(d: _Diff, name: str, before: Any, after: Any) -> None:
    """Brokered (the node holds a placeholder) or in the node's environment (it holds
    the value): to the environment widens, to the broker narrows, another upstream or
    broker setting changes what the key may do."""
    base: Loc = ("secrets", name)
    if before is None and after is not None:
        upstream = after.get("upstream")
        d.narrows("secrets", f"secret {name} now brokered to {upstream}", (*base, "broker"))
    elif before is not None and after is None:
        d.widens("secrets", f"secret {name} now in its node's environment (was brokered)", base)
    elif before is not None and before != after:
        d.changes_("secrets", f"secret {name}: broker settings changed", (*base, "broker"))


def _uid_below(user: str) -> bool:
    return min(int(part) for part in user.split(":")) < 10000


def _compare_isolation(d: _Diff) -> None:
    old, new = d.old, d.new
    loc: Loc = ("isolation", "oci_runtime")
    if old.oci_runtime == "runsc" and new.oci_runtime == "runc":
        d.widens("isolation", "oci_runtime runsc -> runc: nodes leave gVisor", loc)
    elif old.oci_runtime == "runc" and new.oci_runtime == "runsc":
        d.narrows("isolation", "oci_runtime runc -> runsc: nodes run under gVisor", loc)
    if old.user != new.user:
        summary = f"user {old.user} -> {new.user}"
        if _uid_below(new.user) and not _uid_below(old.user):
            d.widens("isolation", summary + " (a likely host account)", ("isolation", "user"))
        elif _uid_below(old.user) and not _uid_below(new.user):
            d.narrows("isolation", summary + " (a dedicated uid)", ("isolation", "user"))
        else:
            d.changes_("isolation", summary, ("isolation", "user"))
    for path, size in new.tmpfs.items():
        loc = ("isolation", "tmpfs", path)
        if path not in old.tmpfs:
            d.widens("isolation", f"tmpfs {path} ({format_size(size)}) added", loc)
        elif size > old.tmpfs[path]:
            d.widens(
                "isolation",
                f"tmpfs {path} {format_size(old.tmpfs[path])} -> {format_size(size)}",
                loc,
            )
        elif size < old.tmpfs[path]:
            d.narrows(
                "isolation",
                f"tmpfs {path} {format_size(old.tmpfs[path])} -> {format_size(size)}",
                loc,
            )
    for path, size in old.tmpfs.items():
        if path not in new.tmpfs:
            loc = ("isolation", "tmpfs", path)
            d.narrows("isolation", f"tmpfs {path} ({format_size(size)}) removed", loc, removed=True)


def _compare_limits(d: _Diff) -> None:
    blocks: tuple[tuple[str, Limits, Limits, tuple[str, ...]], ...] = (
        ("limits", d.old.limits, d.new.limits, _LIMIT_KEYS),
        ("defaults", d.old.defaults, d.new.defaults, _DEFAULT_KEYS),
    )
    for block, old, new, keys in blocks:
        for key in keys:
            before, after = getattr(old, key), getattr(new, key)
            if before == after:
                continue
            summary = f"{block}.{key} {_show(key, before)} -> {_show(key, after)}"
            if after > before:
                d.widens(block, summary, (block, key))
            else:
                d.narrows(block, summary, (block, key))


def _compare_env(d: _Diff) -> None:
    old = _list_of(d.old, "env", "deny")
    new = _list_of(d.new, "env", "deny")
    old_upper, new_upper = {n.upper() for n in old}, {n.upper() for n in new}
    for index, name in enumerate(old):
        if name.upper() not in new_upper:
            d.widens_removed("env", f"env {name} no longer denied", ("env", "deny", index))
    for index, name in enumerate(new):
        if name.upper() not in old_upper:
            d.narrows("env", f"env {name} now denied", ("env", "deny", index))


_AREAS = (
    "runtimes",
    "images",
    "egress",
    "mounts",
    "secrets",
    "isolation",
    "limits",
    "defaults",
    "env",
    "agents",
    "policy",
)
_DIRECTIONS = ("widens", "narrows", "changes")


def compare(old: Policy, new: Policy) -> list[Change]:
    """What changing from `old` to `new` widens, narrows or otherwise changes. Additions and
    value changes are located in the new file, removals in the old one."""
    d = _Diff(old, new)
    _compare_patterns(d, "runtimes", "runtime", ("runtimes",))
    _compare_patterns(d, "images", "image", ("images",))
    _compare_patterns(d, "egress", "egress", ("network", "egress"), _granted)
    _compare_patterns(d, "egress", "private name", ("network", "private_names"), _granted)
    _compare_mounts(d)
    _compare_secrets(d)
    _compare_isolation(d)
    _compare_limits(d)
    _compare_env(d)
    compare_agents(d)
    if old.name != new.name:
        d.changes_("policy", f"name {old.name} -> {new.name}", ("name",))
    return sorted(
        d.changes,
        key=lambda c: (_DIRECTIONS.index(c.direction), _AREAS.index(c.area), c.file, c.line or 0),
    )
