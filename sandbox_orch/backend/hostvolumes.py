"""Memory-backed volumes mounted on this host, for an engine that shares its mounts.

The engine's own memory-backed volume (`local` driver, type tmpfs) loses its content when
its last container stops, so keeping a producer's artifact for its consumers takes an
idle holder container: about 100 ms to start and as much to remove, per producer. When
the engine runs on this host, in this mount namespace, and we may mount, a tmpfs capped at
the same size is mounted here instead, under ROOT, and handed to the engine as a bind
volume. It keeps its content with no container, `statvfs` says whether it is full, and
the copy to the host reads its files directly instead of through an archive.

ROOT is below /run, which no policy can mount (mounts.SYSTEM_PATHS), and is root's alone.
The engine's volume is created before the mount and removed after it, so a crash at any
point leaves a labelled volume for `gc` to find, never a mount nobody accounts for.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
from pathlib import Path

from .base import inode_limit

ROOT = Path("/run/sandbox-orch/volumes")
_CAP_SYS_ADMIN = 21  # what mount(2) asks for
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND = 32, 4096
# Like /tmp: nothing written by a node is run from here, set-id or a device node.
_FLAGS = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
_MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


def unavailable(socket_path: str | None) -> str | None:
    """Why host volumes cannot serve the engine listening on `socket_path`, or None."""
    if os.geteuid() != 0 or not _effective_capability(_CAP_SYS_ADMIN):
        return "mounting needs root"
    if socket_path is None:
        return "the engine is not reached through a local socket"
    if not os.access(ROOT.parent.parent, os.W_OK | os.X_OK):
        return f"{ROOT.parent.parent} is not a writable directory"
    try:
        pid = _peer_pid(socket_path)
        theirs = os.stat(f"/proc/{pid}/ns/mnt") if pid else None
        ours = os.stat("/proc/self/ns/mnt")
    except OSError as error:
        return f"cannot tell where the engine behind {socket_path} runs ({error.strerror})"
    if theirs is None:
        return "the engine runs in another PID namespace"
    if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino):
        return "the engine runs in another mount namespace (it would not see our mounts)"
    return None


def _effective_capability(bit: int) -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> bit & 1)
    return False


def _peer_pid(socket_path: str) -> int:
    """The process that listens on a Unix socket (0 when it is not visible from here)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(5)
        connection.connect(socket_path)
        credentials = connection.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
        )
    pid, _uid, _gid = struct.unpack("3i", credentials)
    return pid


def path_of(name: str) -> Path:
    """Where volume `name` is mounted (a name is one path component, never `.`/`..`)."""
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"not a volume name: {name!r}")
    return ROOT / name


def mount(name: str, size: int, owner: str) -> Path:
    """A fresh tmpfs of `size` bytes and `inode_limit(size)` inodes, owned by `owner`
    ("uid:gid"), mode 0700, noexec, nosuid and nodev."""
    uid, gid = (int(part) for part in owner.split(":"))
    for directory in (ROOT.parent, ROOT):
        directory.mkdir(mode=0o700, exist_ok=True)
        if directory.is_symlink():
            raise OSError(f"{directory} is a symlink; refusing to mount below it")
        directory.chmod(0o700)  # root's alone, whoever made it first
    path = path_of(name)
    path.mkdir(mode=0o700)  # exists already: a name reused, refused
    options = f"size={size},nr_inodes={inode_limit(size)},uid={uid},gid={gid},mode=0700"
    if _libc.mount(b"tmpfs", bytes(path), b"tmpfs", _FLAGS, options.encode()):
        error = ctypes.get_errno()
        path.rmdir()
        raise OSError(error, f"mounting a tmpfs: {os.strerror(error)}", str(path))
    return path


def view(name: str, source: Path) -> Path:
    """A read-only, noexec, nosuid, nodev bind of the volume at `source`, as volume `name`:
    what consumers mount (a bind keeps its source mount's flags, a later read-only remount
    by the runtime would not)."""
    path = path_of(name)
    path.mkdir(mode=0o700)  # exists already: a name reused, refused
    flags = _MS_BIND | _FLAGS
    if _libc.mount(bytes(source), bytes(path), None, _MS_BIND, None) or _libc.mount(
        None, bytes(path), None, flags | _MS_REMOUNT | _MS_RDONLY, None
    ):
        error = ctypes.get_errno()
        if os.path.ismount(path):
            _libc.umount2(bytes(path), _MNT_DETACH)
        path.rmdir()
        raise OSError(error, f"binding a read-only view: {os.strerror(error)}", str(path))
    return path


def unmount(name: str) -> None:
    """Unmount and remove volume `name`'s directory; one already gone is not an error.

    Detached, so a container that still holds it (one that leaked) cannot make this fail;
    the memory is freed when the last user lets go."""
    path = path_of(name)
    if not os.path.lexists(path):
        return  # an engine volume, or one whose mount is already gone
    if os.path.ismount(path) and _libc.umount2(bytes(path), _MNT_DETACH):
        error = ctypes.get_errno()
        raise OSError(error, f"unmounting: {os.strerror(error)}", str(path))
    path.rmdir()
