"""Which engine answers on the Docker API: Docker or Podman (through `podman system
service`), told from its own `version` and `info`. The one place the backend and `doctor`
ask; pure, no engine here.

Podman speaks Docker's API but differs where the hardening is concerned (see
backend/settings.py, readback.py and docker.py for each difference it causes), and a
rootless Podman on cgroup v1 cannot enforce limits at all: it is refused before anything
starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DOCKER, PODMAN = "Docker", "Podman"
# Size-capped tmpfs volumes of the `local` driver work in Podman from 4.8 on.
PODMAN_TMPFS_VOLUMES = (4, 8)


@dataclass(frozen=True)
class Engine:
    name: str  # DOCKER or PODMAN
    version: str
    rootless: bool
    cgroup_version: str  # "1", "2", or "" when the engine does not say

    @property
    def podman(self) -> bool:
        return self.name == PODMAN

    @property
    def tmpfs_volumes(self) -> bool:
        """Can the engine's own volumes be size-capped tmpfs (Podman before 4.8: no)?"""
        return not self.podman or version_tuple(self.version) >= PODMAN_TMPFS_VOLUMES

    def describe(self) -> str:
        """E.g. `Podman 4.3.1 (rootful, cgroup v1)`."""
        mode = "rootless" if self.rootless else "rootful"
        cgroup = f", cgroup v{self.cgroup_version}" if self.cgroup_version else ""
        return f"{self.name} {self.version} ({mode}{cgroup})"


def identify(version: Mapping[str, Any], info: Mapping[str, Any]) -> Engine:
    """The engine behind a `version` and an `info` answer of the Docker API. Podman names
    itself among the components ("Podman Engine"); Docker names its component "Engine"."""
    components = version.get("Components") or []
    names = {str(c.get("Name") or "") for c in components if isinstance(c, Mapping)}
    podman = "Podman Engine" in names
    options = [str(option) for option in info.get("SecurityOptions") or []]
    return Engine(
        name=PODMAN if podman else DOCKER,
        version=str(version.get("Version") or "?"),
        rootless="name=rootless" in options,
        cgroup_version=str(info.get("CgroupVersion") or ""),
    )


def pinged_podman(headers: Mapping[str, str]) -> bool:
    """Does a `_ping` answer come from Podman? It adds its own API version header: a
    check as cheap as the ping, where Docker's `version` costs ~10 ms (it asks containerd
    and runc), so Docker is never asked it on a run."""
    return any(name.lower() == "libpod-api-version" for name in headers)


def refusal(engine: Engine) -> str | None:
    """Why nodes must not run on this engine, or None."""
    if engine.podman and engine.rootless and engine.cgroup_version == "1":
        return (
            f"rootless {engine.name} {engine.version} on cgroup v1 does not enforce the memory, "
            "cpu and pids limits (it drops them silently); use rootful Podman "
            "(DOCKER_HOST=unix:///run/podman/podman.sock) or a host with cgroup v2"
        )
    return None


def version_tuple(text: str) -> tuple[int, ...]:
    """`4.3.1` -> (4, 3, 1); stops at the first part that is not a number (`4.9.0-rc1`
    -> (4, 9)); anything unreadable -> ()."""
    parts: list[int] = []
    for part in text.split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)
