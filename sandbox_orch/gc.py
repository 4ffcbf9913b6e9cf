"""Garbage collection: remove labelled resources whose run is no longer alive."""

from __future__ import annotations

import socket
from dataclasses import dataclass

import psutil

from .backend import Backend, Resource
from .execution import OWNER_LABEL, RUN_LABEL


@dataclass(frozen=True)
class GcReport:
    removed: list[Resource]
    kept: list[Resource]  # owned by a live run


def owner_alive(owner: str | None) -> bool:
    """Is the process named by an owner label (host:pid:start) still the one running?

    A resource without a readable owner, or owned on another host, is not provably
    alive here; resources from other hosts are kept (they may share the engine).
    """
    if not owner:
        return False
    try:
        host, pid, started = owner.rsplit(":", 2)
        if host != socket.gethostname():
            return True
        return int(psutil.Process(int(pid)).create_time()) == int(started)
    except (ValueError, psutil.Error):
        return False


async def collect_garbage(backend: Backend) -> GcReport:
    removed, kept = [], []
    for resource in await backend.labelled(RUN_LABEL):
        if owner_alive(resource.labels.get(OWNER_LABEL)):
            kept.append(resource)
            continue
        await backend.remove_resource(resource)
        removed.append(resource)
    return GcReport(removed, kept)
