"""Paths inside a container: one normal form, and which ones a workflow may not use.

Every container path a workflow or policy writes (working directory, mount targets,
artifact and input paths, tmpfs paths) goes through `normalise` once, when it is read;
everything downstream (admission, the engine, results, the plan) sees only the normal
form. So `//proc`, `/./proc/`, `/tmp/../proc` and `/proc` are one path, judged once.

Checks then look through the symlinks our images (Debian, merged /usr) and the engine
put at fixed places: `/dev/fd` is /proc/self/fd, `/var/run` is /run, `/lib` is /usr/lib.
A path is judged as what it reaches (`canonical`), but given to the engine as written.
"""

from __future__ import annotations

MAX_LENGTH = 1024

# Fixed symlinks in every image we run, and what they point to.
ALIASES = {
    "/dev/fd": "/proc/self/fd",
    "/dev/stdin": "/proc/self/fd/0",
    "/dev/stdout": "/proc/self/fd/1",
    "/dev/stderr": "/proc/self/fd/2",
    "/dev/core": "/proc/kcore",
    "/etc/mtab": "/proc/self/mounts",
    "/var/run": "/run",
    "/var/lock": "/run/lock",
    "/bin": "/usr/bin",
    "/sbin": "/usr/sbin",
    "/lib": "/usr/lib",
    "/lib32": "/usr/lib32",
    "/lib64": "/usr/lib64",
    "/libx32": "/usr/libx32",
}

# No mount, artifact, input or tmpfs may be placed at, or below, these (nor at "/").
FORBIDDEN_TARGETS = {
    "/proc": "the kernel's process interface",
    "/sys": "the kernel's system interface",
    "/dev": "device files",
    "/etc": "system configuration (users, name resolution, the dynamic loader)",
    "/usr": "the image's programs and libraries (also /bin, /sbin, /lib*)",
    "/boot": "the boot files",
    "/run": "run-time state: the node's egress proxy socket is at /run/egress",
}

# A working directory may not be at or below these: a directory handle into /proc
# (/proc/self/fd/N, also as /dev/fd/N) can reach the host's file system (CVE-2024-21626).
FORBIDDEN_WORKDIRS = {
    "/proc": "the kernel's process interface",
    "/sys": "the kernel's system interface",
    "/dev": "device files (/dev/fd is /proc/self/fd)",
}


def normalise(path: object) -> str:
    """The normal form of an absolute container path: no empty, `.` or `..` components,
    no trailing slash. ValueError for anything that is not an absolute path."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError("must be an absolute path inside the container")
    if len(path) > MAX_LENGTH:
        raise ValueError(f"a container path is at most {MAX_LENGTH} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise ValueError("a container path cannot contain control characters or NUL")
    parts: list[str] = []
    for part in path.split("/"):
        if part == "..":
            if parts:
                parts.pop()  # `..` of / is / (as the kernel does)
        elif part not in ("", "."):
            parts.append(part)
    return "/" + "/".join(parts)


def canonical(path: str) -> str:
    """What a normal path reaches through the images' fixed symlinks (repeatedly:
    /dev/fd goes to /proc/self/fd, /var/run/x to /run/x)."""
    for _ in range(8):  # the aliases chain at most twice; bounded anyway
        for alias, real in ALIASES.items():
            if _within(path, alias):
                path = real + path[len(alias) :]
                break
        else:
            return path
    return path


def forbidden_target(path: str) -> str | None:
    """Why nothing may be mounted at `path` (normal form), or None."""
    reached = canonical(path)
    if reached == "/":
        return "cannot mount over the root file system"
    return _refusal(path, reached, FORBIDDEN_TARGETS, "cannot mount over")


def forbidden_workdir(path: str) -> str | None:
    """Why `path` (normal form) cannot be the working directory, or None."""
    return _refusal(path, canonical(path), FORBIDDEN_WORKDIRS, "a working directory cannot be in")


def _refusal(path: str, reached: str, forbidden: dict[str, str], verb: str) -> str | None:
    for danger, reason in forbidden.items():
        if _within(reached, danger):
            via = f" ({path} is {reached})" if reached != path else ""
            return f"{verb} {danger}: {reason}{via}"
    return None


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")
