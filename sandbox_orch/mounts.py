"""Which host paths a node may mount. Decided on resolved paths: `..`, repeated slashes
and symlinks are resolved first, so `//var/run/docker.sock`, `/var/run/../run/docker.sock`
and a workspace symlink pointing at /etc are judged as what they really are.

The resolved path, not the one written, is what the engine is given, so a symlink
swapped after admission cannot redirect the mount at its top level.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .policy import POLICIES_DIR, MountGrant

# Never mountable, whatever the policy says: themselves, anything inside, anything
# containing them (mounting /var would expose /var/lib/docker and /var/run/docker.sock).
SYSTEM_PATHS = ("/etc", "/proc", "/sys", "/dev", "/boot", "/run", "/var/run",
                "/var/lib/docker", "/var/lib/containerd", "/var/lib/kubelet")  # fmt: skip
RUNTIME_SOCKETS = frozenset({
    "docker.sock", "containerd.sock", "crio.sock", "podman.sock", "dockershim.sock",
    "cri-dockerd.sock", "buildkitd.sock", "containerd-shim.sock", "kubelet.sock",
})  # fmt: skip
# Credentials kept in a home directory: never mountable, even where the home is.
CREDENTIALS = (".ssh", ".aws", ".docker", ".kube", ".gnupg", ".config/gcloud", ".azure",
               ".netrc", ".git-credentials", ".config/gh")  # fmt: skip
FORBIDDEN_TARGETS = ("/", "/proc", "/sys", "/dev", "/etc", "/bin", "/sbin", "/usr", "/lib")


@dataclass(frozen=True)
class BindMount:
    source: str  # resolved host path
    target: str
    read_only: bool


def resolve(source: str, base_dir: Path) -> Path:
    """The real path of `source` (relative to the workflow's directory)."""
    return Path(os.path.realpath(base_dir / os.path.expanduser(source)))


def never_mountable(path: Path, mode: str = "ro", home: Path | None = None) -> str | None:
    """Why `path` (resolved) can never be mounted in `mode`, or None."""
    if path == Path("/"):
        return "the root file system is never mountable"
    home = home if home is not None else Path(os.path.realpath(Path.home()))
    policies = Path(os.path.realpath(POLICIES_DIR))
    protected = [Path(os.path.realpath(p)) for p in SYSTEM_PATHS]
    protected += [policies, *(home / c for c in CREDENTIALS), *_engine_sockets()]
    for danger in protected:
        if path == danger or danger in path.parents:
            return f"{danger} is never mountable"
        # Reading a directory that holds the policies leaks nothing; writing it could
        # rewrite the policy. Everything else is refused whole.
        if path in danger.parents and (danger != policies or mode == "rw"):
            return f"it contains {danger}, which is never mountable" + (
                " writable" if danger == policies else ""
            )
    if path == home or path in home.parents:
        return "a home directory (or what contains one) is never mountable"
    if path.name in RUNTIME_SOCKETS or _is_socket(path):
        return "sockets are never mountable"
    return None


def grant_for(path: Path, mode: str, grants: tuple[MountGrant, ...], base_dir: Path) -> str | None:
    """None if a grant covers `path` in `mode`; else why not."""
    modes_elsewhere: set[str] = set()
    for grant in grants:
        root = resolve(str(grant.source), base_dir)
        if path == root or root in path.parents:
            if mode in grant.modes:
                return None
            modes_elsewhere.update(grant.modes)
    if modes_elsewhere:
        return f"granted only as {'/'.join(sorted(modes_elsewhere))}, not {mode}"
    return "not under any mount root the policy grants"


def forbidden_target(target: str) -> str | None:
    normal = os.path.normpath(target)
    for danger in FORBIDDEN_TARGETS:
        if normal == danger or (danger != "/" and normal.startswith(danger + "/")):
            return f"cannot mount over {danger}"
    return None


def _engine_sockets() -> list[Path]:
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        return [Path(os.path.realpath(host.removeprefix("unix://")))]
    return []


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(path.stat().st_mode)
    except OSError:
        return False
