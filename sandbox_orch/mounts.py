"""Which host paths a node may mount. Decided on resolved paths: `..`, repeated slashes
and symlinks are resolved first, so `//var/run/docker.sock`, `/var/run/../run/docker.sock`
and a workspace symlink pointing at /etc are judged as what they really are.

The resolved path, not the one written, is what the engine is given, so a symlink
swapped after admission cannot redirect the mount at its top level. Bind mounts are
non-recursive (backend), so a file system mounted below a granted directory on the host
is not part of what a node sees; `exposure` refuses a source with such a mount inside
(gVisor fails to start with one) and walks the tree, refusing any socket in it.
"""

from __future__ import annotations

import os
import re
import site
import stat
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from . import gitpaths, store
from .policy import POLICIES_DIR, MountGrant

# Never mountable, whatever the policy says: themselves, anything inside, anything
# containing them (mounting /var would expose /var/lib/docker and /var/run/docker.sock).
SYSTEM_PATHS = {
    "/etc": "system configuration and password hashes",
    "/proc": "the kernel's process interface",
    "/sys": "the kernel's system interface",
    "/dev": "device files",
    "/boot": "the kernel and boot loader",
    "/run": "run-time state: the engine's socket, our volumes and egress sockets",
    "/var/run": "run-time state (it is /run)",
    "/usr": "the host's programs and libraries",
    "/bin": "the host's programs",
    "/sbin": "the host's programs",
    "/lib": "the host's libraries",
    "/lib32": "the host's libraries",
    "/lib64": "the host's libraries",
    "/libx32": "the host's libraries",
    "/root": "root's home directory",
    "/var/lib": "system state: the engine's containers and images, databases",
    "/var/log": "system logs",
    "/var/spool": "mail, print and cron spools",
    "/var/mail": "mailboxes",
    "/var/backups": "backups of system files (password hashes)",
}
# Never mountable itself; a directory below it (someone's project) may be.
HOMES = Path("/home")
RUNTIME_SOCKETS = frozenset({
    "docker.sock", "containerd.sock", "crio.sock", "podman.sock", "dockershim.sock",
    "cri-dockerd.sock", "buildkitd.sock", "containerd-shim.sock", "kubelet.sock",
})  # fmt: skip
# Credentials kept in a home directory: never mountable, even where the home is.
# The coding agents' logins and sessions too (Claude Code: ~/.claude/.credentials.json and
# ~/.claude.json; Codex: ~/.codex/auth.json), and the keychains that hold them (macOS,
# the freedesktop keyring, pass): a node gets an agent's login only as a granted secret.
CREDENTIALS = (".ssh", ".aws", ".docker", ".kube", ".gnupg", ".config/gcloud", ".azure",
               ".netrc", ".git-credentials", ".config/gh", ".npmrc", ".pypirc",
               ".claude", ".claude.json", ".claude.json.backup", ".config/claude", ".codex",
               "Library/Keychains", ".local/share/keyrings", ".password-store")  # fmt: skip
# What the home's owner runs without asking (shell start-up files, git's configuration
# with its hooks and ssh command, ~/.local/bin and user site-packages, ~/.config's
# autostart): writable by a node, it is code execution on the host.
STARTUP = (".bashrc", ".bash_profile", ".bash_login", ".bash_logout", ".profile", ".zshrc",
           ".zshenv", ".zprofile", ".zlogin", ".gitconfig", ".config", ".local")  # fmt: skip
# How many entries a mount source may have: each is checked for sockets, and a tree too
# large to check is refused rather than half checked.
MAX_ENTRIES = 100_000


@dataclass(frozen=True)
class BindMount:
    source: str  # resolved host path
    target: str
    read_only: bool
    # Container paths inside `target` hidden by an empty read-only file system: where the
    # run store lies inside the source (nothing this tool writes is visible to a node).
    masks: tuple[str, ...] = ()
    # Paths relative to the source (and target) bound again read-only over a read-write
    # mount: what the host's git runs (see MAX_GIT_PATHS).
    read_only_inside: tuple[str, ...] = ()


@dataclass(frozen=True)
class Walk:
    """What the admission walk of a mount source found."""

    problem: str | None = None  # why it can never be mounted
    git: tuple[str, ...] = ()  # git's paths inside it, relative, outermost only


@dataclass(frozen=True)
class _Protected:
    path: Path
    reason: str
    # Refused itself and inside, always. A directory containing it may be mounted in
    # these modes: none for system paths; read-only around the tool's own files (reading
    # them is harmless, writing them is code execution on the host at the next run); any
    # around the run store, which is then masked (`masks`).
    around: tuple[str, ...] = ()
    # Writable around it only from its parent: deeper, a node could rename a directory
    # between (the mask moves with it, but on the host the store then lies elsewhere,
    # unmasked for the next run). Renaming the masked directory itself fails (EBUSY).
    writable_from_parent_only: bool = False


def resolve(source: str, base_dir: Path) -> Path:
    """The real path of `source` (relative to the workflow's directory)."""
    return Path(os.path.realpath(base_dir / os.path.expanduser(source)))


def never_mountable(path: Path, mode: str = "ro", home: Path | None = None) -> str | None:
    """Why `path` (resolved) can never be mounted in `mode`, or None."""
    if path == Path("/"):
        return "the root file system is never mountable"
    home = home if home is not None else _real(Path.home())
    if path == HOMES:
        return f"{HOMES} (everyone's home directory) is never mountable"
    if path.parent == HOMES:
        home_of_path = path
    elif HOMES in path.parents:
        home_of_path = HOMES / path.relative_to(HOMES).parts[0]
    else:
        home_of_path = home
    if path in (home, home_of_path) or path in home.parents:
        return "a home directory (or what contains one) is never mountable"
    for danger in _protected(home, home_of_path):
        if path == danger.path or danger.path in path.parents:
            return f"{danger.path} is never mountable ({danger.reason})"
        if path in danger.path.parents and mode not in danger.around:
            writable = " writable" if danger.around else ""
            why = f"it contains {danger.path}, which is never mountable{writable}"
            return f"{why} ({danger.reason})"
        deep = path in danger.path.parents and danger.path.parent != path
        if deep and mode == "rw" and danger.writable_from_parent_only:
            return (
                f"it contains {danger.path} below a directory a node could rename; mount "
                f"it read-only, or mount {danger.path.parent} or a directory beside it"
            )
    if path.name in RUNTIME_SOCKETS or _is_socket(path):
        return "sockets are never mountable"
    return None


def _protected(*homes: Path) -> Iterator[_Protected]:
    for path, reason in SYSTEM_PATHS.items():
        yield _Protected(_real(Path(path)), reason)
    for home in dict.fromkeys(homes):  # the user's, and the one the path is in
        for name in CREDENTIALS:
            yield _Protected(home / name, "credentials")
        for name in STARTUP:
            yield _Protected(home / name, "what the home's owner runs at start-up")
    for path in _engine_sockets():
        yield _Protected(path, "the container engine's socket")
    # The tool itself: writable by a node, it would run the node's code on the host at
    # the next run. Reading it is harmless.
    yield _Protected(_real(POLICIES_DIR), "the policies", around=("ro",))
    for path in _own_installation():
        yield _Protected(path, "the installation running sandbox-orch", around=("ro",))
    # What this tool writes: the run store (results, artifacts, runs.db) may lie inside a
    # granted directory, where it is masked (`masks`); the egress sockets never may.
    yield _Protected(_real(store.home()), "the run store", ("ro", "rw"), True)
    yield _Protected(_real(store.private_root()), "sandbox-orch's private files")


def _own_installation() -> list[Path]:
    places = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix}
    places.add(str(Path(__file__).resolve().parent))  # the package, wherever it is loaded from
    places.update(site.getsitepackages() if hasattr(site, "getsitepackages") else ())
    if site.ENABLE_USER_SITE:
        places.add(site.getusersitepackages())
    return sorted({_real(Path(p)) for p in places if p})


def masks(source: Path, target: str) -> tuple[str, ...]:
    """Container paths to hide in a mount of `source` (resolved) at `target`: the run store,
    when it lies inside (never_mountable refuses a source inside it)."""
    home = _real(store.home())
    if source in home.parents:
        return (f"{target.rstrip('/')}/{home.relative_to(source).as_posix()}",)
    return ()


def exposure(source: Path, limit: int = MAX_ENTRIES) -> str | None:
    """Why `source` (resolved) would expose what no node may reach, or None."""
    return walk(source, limit).problem


def walk(source: Path, limit: int = MAX_ENTRIES) -> Walk:
    """Why `source` (resolved) would expose what no node may reach (a socket
    anywhere inside (gVisor's --host-uds=open opens every host socket in a mount, runc
    lets a node connect to any). Symlinks are not followed: a node resolves them in its
    own file system, where they reach only what is mounted (and walked) too. Other file
    systems are not entered (the bind mount does not include them) and the masked run
    store is skipped. Past `limit` entries: refused.

    The same walk collects what the host's git runs from (git directories, by name or by
    content as a bare repository, `.git` files and the git directories they name, hooks
    directories their config names), for a read-write mount to keep read-only."""
    if not source.is_dir():
        return Walk()
    # Non-recursive binds hide them under runc, but gVisor does not start with one.
    points = _mount_points()
    if points is None:
        return Walk("cannot tell which file systems are mounted inside (/proc/self/mountinfo)")
    if inner := sorted(m for m in points if source in m.parents):
        return Walk(f"contains another mounted file system, {inner[0]}; mount it on its own")
    skip = _real(store.home())
    device = source.stat().st_dev
    pending, seen, git = [source], 0, []
    while pending:
        directory = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError as error:
            return Walk(f"cannot check {directory} for sockets ({error.strerror})")
        kinds: dict[str, int] = {}
        for entry in entries:
            seen += 1
            if seen > limit:
                return Walk(f"has more than {limit} entries to check for sockets; mount less")
            path = Path(entry.path)
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone since the listing: nothing there to expose
            kinds[entry.name] = stat.S_IFMT(info.st_mode)
            if stat.S_ISSOCK(info.st_mode):
                return Walk(f"contains a socket, {path}; sockets are never mountable")
            if entry.name == ".git" and kinds[entry.name] in (stat.S_IFDIR, stat.S_IFREG):
                git += gitpaths.of_dot_git(path, directory)
            if stat.S_ISDIR(info.st_mode) and path != skip and info.st_dev == device:
                pending.append(path)
        if directory != source and directory.name != ".git" and gitpaths.is_git_dir(kinds):
            git += [directory, *gitpaths.named_in_config(directory / "config", directory)]
    git += gitpaths.named_in_user_config()
    return Walk(None, _outermost(git, source))


def _outermost(paths: list[Path], source: Path) -> tuple[str, ...]:
    """Paths inside `source` (not itself), relative, none inside another."""
    inside = sorted({p for p in paths if source in p.parents and p.exists()})
    kept: list[Path] = []
    for path in inside:
        if not any(k in path.parents for k in kept):
            kept.append(path)
    return tuple(p.relative_to(source).as_posix() for p in kept)


def moved(binds: Iterable[BindMount], targets: Iterable[str] = ()) -> str | None:
    """Why an admitted mount would no longer reach what was admitted, or None; checked
    just before its container starts. Sources were resolved when the run was admitted (no
    symlink on the way). Since then a node that can write where one lies (an earlier node
    of the run, or a failed attempt before its retry) may have put a symlink on the way:
    the engine follows it on the host when it mounts, to any host path. So may the git
    directories bound again read-only inside a read-write mount (rename their parent,
    link a new `.git` to /root/.ssh): they are sources too. And a symlink on the way to
    another of the node's `targets` below a bind's target, in the bind's host directory,
    would take that mount elsewhere in the container (/usr/local/bin)."""
    binds = list(binds)
    for bind in binds:
        for path in (bind.source, *(os.path.join(bind.source, r) for r in bind.read_only_inside)):
            if via_symlink(path):
                return (
                    f"mount source {path} now goes through a symlink, which the engine would "
                    "follow on the host (it did not when the run was admitted)"
                )
    for target in targets:
        if why := through_symlink(target, binds):
            return f"{why} (it did not when the run was admitted)"
    return None


def via_symlink(path: str) -> bool:
    """Whether the host path `path` (absolute) goes through a symlink; one that cannot
    be resolved (a directory on the way we may not search) counts as one: fail closed."""
    try:
        return os.path.realpath(path) != os.path.normpath(path)
    except OSError:
        return True


def through_symlink(target: str, binds: Iterable[BindMount]) -> str | None:
    """Why `target` (normal form) is reached through a symlink of a bind's host directory
    (the engine follows it, inside the container, on the way to the mount), or None."""
    for bind in binds:
        prefix = bind.target.rstrip("/") + "/"
        inside = target.startswith(prefix)
        if inside and via_symlink(os.path.join(bind.source, target[len(prefix) :])):
            return f"{target} goes through a symlink in the mounted {bind.source}"
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


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _mount_points(mountinfo: str = "/proc/self/mountinfo") -> set[Path] | None:
    """Every mount point on this host (in our mount namespace, the engine's here); None
    when that cannot be read."""
    try:
        with open(mountinfo, "rb") as info:  # paths are bytes: decoded as os.realpath does
            lines = os.fsdecode(info.read()).splitlines()
    except OSError:
        return None
    return {Path(_unescape(line.split(" ")[4])) for line in lines if line.count(" ") >= 4}


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _engine_sockets() -> list[Path]:
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        return [_real(Path(host.removeprefix("unix://")))]
    return []


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(path.stat().st_mode)
    except OSError:
        return False
