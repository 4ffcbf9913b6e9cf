"""Rules on mount grants: writable, above or outside the workflow directory, host roots,
homes, system paths, sockets and credential stores (SO401-SO409)."""

from __future__ import annotations

import posixpath

from ..yamlsafe import Loc
from .checking import _Review

_HOME_TOPS = frozenset({"home", "root", "Users"})
_SYSTEM_TOPS = frozenset(
    {
        "etc", "var", "run", "proc", "sys", "dev", "boot", "usr", "bin", "sbin", "lib",
        "lib32", "lib64", "libx32",
    }
)  # fmt: skip
_CREDENTIAL_PARTS = frozenset(
    {
        ".ssh", ".aws", ".azure", ".kube", ".docker", ".gnupg", "gcloud", ".gcloud",
        ".netrc", ".npmrc", ".pypirc", ".git-credentials", ".vault-token", ".terraform.d",
        ".config", ".password-store", ".cargo", "credentials",
    }
)  # fmt: skip


def _mount_scope(source: str) -> str:
    """workdir | subdir | above | root | home | system | absolute."""
    if source.startswith("~"):
        return "home"
    normal = posixpath.normpath(source)
    if source.startswith("/"):
        parts = [p for p in normal.split("/") if p]
        if not parts:
            return "root"
        if parts[0] in _HOME_TOPS:
            return "home"
        if parts[0] in _SYSTEM_TOPS or normal.endswith(".sock"):
            return "system"
        return "absolute"
    if normal == ".." or normal.startswith("../"):
        return "above"
    return "workdir" if normal == "." else "subdir"


def _credential_part(source: str) -> str | None:
    for part in posixpath.normpath(source).split("/"):
        if part in _CREDENTIAL_PARTS or part == ".env" or part.startswith(".env."):
            return part
    return None


def _check_mounts(r: _Review) -> None:
    for index, grant in enumerate(r.data.get("mounts") or ()):
        base: Loc = ("mounts", index)
        source, modes = grant["source"], grant["modes"]
        scope = _mount_scope(source)
        source_loc = (*base, "source")
        if not modes:
            r.add("SO409", (*base, "modes"), f"mount {source} grants no mode")
        writable = [i for i, mode in enumerate(modes) if mode == "rw"]
        is_git = posixpath.normpath(source).split("/")[0] == ".git"
        for mode_index in writable:
            loc = (*base, "modes", mode_index)
            if scope == "workdir" or (scope == "subdir" and is_git):
                r.add("SO401", loc, f"mount {source} is writable (the checkout itself)")
            elif scope == "subdir":
                r.add("SO402", loc, f"mount {source} is writable")
            else:
                r.add("SO403", loc, f"mount {source} is writable, outside the workflow directory")
        if scope == "above":
            r.add("SO404", source_loc, f"mount {source} reaches above the workflow directory")
        elif scope in ("root", "home", "system"):
            what = {"root": "the host root", "home": "a home directory"}.get(
                scope, "a socket" if source.endswith(".sock") else "a system directory"
            )
            r.add("SO405", source_loc, f"mount {source} is {what}")
        elif scope == "absolute":
            r.add("SO406", source_loc, f"mount {source} is an absolute host path")
        elif scope == "workdir" and modes and not writable:
            r.add("SO408", source_loc, f"mount {source} read-only: nodes see the whole directory")
        part = _credential_part(source)
        if part and scope not in ("root", "home", "system"):
            r.add("SO407", source_loc, f"mount {source} holds credentials ({part})")
