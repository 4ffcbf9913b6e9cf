"""Reading a created container back from the engine: did it apply every setting we asked?

An engine (or a proxy in front of one) may silently drop or alter a setting: an older
engine ignoring a field, a plugin rewriting requests. The expected values are derived
from the very arguments `container_kwargs` gave `create_container`, never from a second
copy of the hardening, and compared with the engine's `inspect` of the container before
it starts. Pure: no engine here, only the two dictionaries.

The answer lists the names of the settings that differ (never their values: the
environment holds secrets). Settings the engine fills in that we did not ask for must be
empty (no added capabilities, devices, host namespaces, binds, sysctls, ...), except the
few the engine always fills with defaults of its own (ENGINE_DEFAULTS).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

# HostConfig fields the engine fills with non-empty defaults of its own.
ENGINE_DEFAULTS = frozenset({"ShmSize", "ConsoleSize", "MaskedPaths", "ReadonlyPaths", "Isolation"})
# The engine's own masking of /proc and /sys (moby's oci defaults): it may add, never drop.
DEFAULT_MASKED_PATHS = frozenset(
    {
        "/proc/asound",
        "/proc/acpi",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys/firmware",
    }
)
DEFAULT_READONLY_PATHS = frozenset(
    {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
)
# create_container arguments and where the engine reports them under Config.
CONFIG_FIELDS = {
    "user": "User",
    "entrypoint": "Entrypoint",
    "command": "Cmd",
    "working_dir": "WorkingDir",
    "hostname": "Hostname",
    "network_disabled": "NetworkDisabled",
    "stdin_open": "OpenStdin",
    "tty": "Tty",
}


def differences(
    kwargs: Mapping[str, Any],
    attrs: Mapping[str, Any],
    image_env: Mapping[str, str],
    podman: bool = False,
) -> list[str]:
    """Names of the settings in `kwargs` (create_container's arguments) that the created
    container (`attrs`, the engine's inspect) does not have. `image_env` is the image's
    own environment, which the engine merges into the container's. `podman`: the engine
    is Podman, which reports some settings in its own terms (see podman_as_docker)."""
    expected_host = kwargs["host_config"]
    actual_host = attrs.get("HostConfig") or {}
    if podman:
        actual_host = podman_as_docker(expected_host, actual_host)
        image_env = {**PODMAN_ENV, "HOSTNAME": str(kwargs.get("hostname")), **image_env}
    found = _host_config(expected_host, actual_host, podman)
    found += _mount_points(kwargs["host_config"].get("Mounts") or [], attrs.get("Mounts") or [])
    config = attrs.get("Config") or {}
    for argument, name in CONFIG_FIELDS.items():
        if podman and name == "NetworkDisabled" and actual_host.get("NetworkMode") == "none":
            continue  # Podman does not report it; network mode none is checked instead
        if kwargs.get(argument) is not None and config.get(name) != kwargs[argument]:
            found.append(name)
    # An open stdin must close with our attach (the SDK asks so): a held container's
    # gate then ends, its command never run, if this process dies before its "go".
    if bool(config.get("StdinOnce")) != bool(kwargs.get("stdin_open")):
        found.append("StdinOnce")
    found += _image(kwargs["image"], attrs)
    found += _environment(kwargs.get("environment") or {}, config.get("Env") or [], image_env)
    labels = config.get("Labels") or {}
    if any(labels.get(key) != value for key, value in (kwargs.get("labels") or {}).items()):
        found.append("Labels")
    if kwargs.get("name") and attrs.get("Name") != f"/{kwargs['name']}":
        found.append("Name")
    if attrs.get("AppArmorProfile") == "unconfined":
        found.append("AppArmorProfile")
    return found


def _host_config(expected: Mapping[str, Any], actual: Mapping[str, Any], podman: bool) -> list[str]:
    found = [
        key
        for key, value in expected.items()
        if _NORMAL.get(key, _same)(value) != _NORMAL.get(key, _same)(actual.get(key))
    ]
    for key, value in actual.items():
        if key in expected or not value:
            continue  # asked for and compared above, or empty: nothing added
        if key not in ENGINE_DEFAULTS:
            found.append(key)  # a setting nobody asked for (CapAdd, Devices, PidMode, ...)
    if podman:
        return found  # Podman does not report its masked and read-only paths
    if not set(actual.get("MaskedPaths") or ()) >= DEFAULT_MASKED_PATHS:
        found.append("MaskedPaths")
    if not set(actual.get("ReadonlyPaths") or ()) >= DEFAULT_READONLY_PATHS:
        found.append("ReadonlyPaths")
    return found


def _same(value: Any) -> Any:
    return value


def _as_set(value: Any) -> frozenset[Any]:
    return frozenset(value or ())


def _restart(value: Any) -> tuple[str, int]:
    value = value or {}
    return value.get("Name") or "", int(value.get("MaximumRetryCount") or 0)


def _ulimits(value: Any) -> frozenset[tuple[str, int, int]]:
    """Podman names them as the kernel does (RLIMIT_NOFILE), Docker as asked (nofile)."""
    return frozenset(
        (u["Name"].lower().removeprefix("rlimit_"), int(u["Soft"]), int(u["Hard"]))
        for u in value or ()
    )


def _log(value: Any) -> tuple[str, tuple[tuple[str, str], ...]]:
    value = value or {}
    return value.get("Type") or "", tuple(sorted((value.get("Config") or {}).items()))


def _mounts(value: Any) -> frozenset[tuple[Any, ...]]:
    """A mount as asked: type, source, target, read-only, and each option set."""
    return frozenset(
        (
            m.get("Type"),
            m.get("Source"),
            m.get("Target"),
            bool(m.get("ReadOnly")),
            (m.get("BindOptions") or {}).get("Propagation") or "",
            bool((m.get("BindOptions") or {}).get("NonRecursive")),
            bool((m.get("VolumeOptions") or {}).get("NoCopy")),
            tuple(sorted((m.get("TmpfsOptions") or {}).items())),
        )
        for m in value or ()
    )


def _empty_as_none(value: Any) -> Any:
    return value or None


_NORMAL: dict[str, Callable[[Any], Any]] = {
    "CapDrop": _as_set,
    "SecurityOpt": _as_set,
    "RestartPolicy": _restart,
    "Ulimits": _ulimits,
    "LogConfig": _log,
    "Mounts": _mounts,
    "Tmpfs": _empty_as_none,
    "PidsLimit": _empty_as_none,
}


def _mount_points(expected: list[Mapping[str, Any]], actual: list[Mapping[str, Any]]) -> list[str]:
    """The mounts the engine made (inspect's top-level Mounts), one per mount asked for,
    with its source, writability and propagation; no other."""
    made = {point.get("Destination"): point for point in actual}
    found = []
    for mount in expected:
        target = mount.get("Target")
        point = made.pop(target, None)
        if point is None or not _mount_matches(mount, point):
            found.append(f"mount {target}")
    found += [f"mount {target} (not asked for)" for target in made]
    return found


def _mount_matches(mount: Mapping[str, Any], point: Mapping[str, Any]) -> bool:
    if point.get("Type") != mount.get("Type") or point.get("RW") is bool(mount.get("ReadOnly")):
        return False
    if mount.get("Type") == "volume":
        return bool(point.get("Name") == mount.get("Source"))
    propagation = (mount.get("BindOptions") or {}).get("Propagation") or ""
    # The engine reports a tmpfs mount's source as "", where we send none.
    return (point.get("Source") or "") == (mount.get("Source") or "") and (
        not propagation or point.get("Propagation") == propagation
    )


def _image(image: str, attrs: Mapping[str, Any]) -> list[str]:
    """An id must be the image the container has; a name, at least the one it was made of."""
    if image.startswith("sha256:"):
        return [] if attrs.get("Image") == image else ["Image"]
    return [] if (attrs.get("Config") or {}).get("Image") == image else ["Image"]


def _environment(
    expected: Mapping[str, str], actual: list[str], image_env: Mapping[str, str]
) -> list[str]:
    """Every variable we set, with our value; any other only as the image has it."""
    have = environment_of(actual)
    found = [f"Env {name}" for name, value in expected.items() if have.get(name) != value]
    found += [
        f"Env {name}"
        for name, value in have.items()
        if name not in expected and image_env.get(name) != value
    ]
    return found


def environment_of(entries: list[str] | None) -> dict[str, str]:
    """An image's or container's `Env` list as a mapping."""
    return dict(entry.split("=", 1) if "=" in entry else (entry, "") for entry in entries or ())


# Podman (through its Docker API) reports some settings in its own terms; each is turned
# into what Docker reports for the same setting, only when it says exactly that.
# Asked value -> Podman's word for it: an IPC namespace of the container's own (Podman's
# "shareable" is one too: others may join it by name, none of ours does); the runtime
# Podman was configured with (make test-podman: runc) it calls "oci".
PODMAN_WORDS = {"IpcMode": ("private", "shareable"), "Runtime": ("runc", "oci")}
# What Podman fills in unasked: fresh PID and UTS namespaces, the kernel's swappiness.
PODMAN_DEFAULTS = {"PidMode": "private", "UTSMode": "private", "MemorySwappiness": -1}
# Docker's default capabilities: with ALL dropped, Podman reports these as CapDrop (it
# reports a container's capabilities as a difference from this set).
PODMAN_DEFAULT_CAPS = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "NET_RAW",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
# Mount options Podman adds to every tmpfs (the mount is private; the image's files
# there, none in ours, are copied up).
PODMAN_TMPFS_OPTIONS = ",rprivate,tmpcopyup"
# Variables Podman adds to every container (HOSTNAME too, as the hostname asked).
PODMAN_ENV = {"container": "podman", "TERM": "xterm"}


def podman_as_docker(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> dict[str, Any]:
    """Podman's HostConfig in Docker's terms. What it cannot report is taken as asked:
    the log driver's options (it reports none; the size cap is applied) and the cgroup
    namespace (Podman 4's API ignores it; README, Podman)."""
    seen = dict(actual)
    for key, (asked, word) in PODMAN_WORDS.items():
        if expected.get(key) == asked and seen.get(key) == word:
            seen[key] = asked
    drop = set(seen.get("CapDrop") or ())
    if list(expected.get("CapDrop") or ()) == ["ALL"] and drop >= PODMAN_DEFAULT_CAPS:
        seen["CapDrop"] = ["ALL"]
    log = seen.get("LogConfig") or {}
    if "LogConfig" in expected and log.get("Config") is None:
        seen["LogConfig"] = {**log, "Config": (expected["LogConfig"] or {}).get("Config")}
    if "CgroupnsMode" in expected and not seen.get("CgroupnsMode"):
        seen["CgroupnsMode"] = expected["CgroupnsMode"]
    if seen.get("Tmpfs"):
        seen["Tmpfs"] = {
            path: options.removesuffix(PODMAN_TMPFS_OPTIONS)
            for path, options in seen["Tmpfs"].items()
        }
    for key, value in PODMAN_DEFAULTS.items():
        if key not in expected and seen.get(key) == value:
            del seen[key]
    if _podman_cpu_quota(expected, seen):
        del seen["CpuPeriod"], seen["CpuQuota"]
    if expected.get("Mounts") and seen.get("Mounts") is None and seen.get("Binds"):
        seen["Mounts"] = [_podman_bind(entry, expected["Mounts"]) for entry in seen.pop("Binds")]
    return seen


_PROPAGATIONS = frozenset({"private", "rprivate", "shared", "rshared", "slave", "rslave"})


def _podman_bind(entry: str, asked: list[Mapping[str, Any]]) -> dict[str, Any]:
    """One of Podman's `Binds` (`source:target:options`) as the mount Docker reports:
    `bind` (not `rbind`) is a non-recursive bind. A volume's no-copy it does not report:
    taken as asked for the same target."""
    source, _, rest = entry.partition(":")
    target, _, options = rest.partition(":")
    flags = options.split(",")
    mount: dict[str, Any] = {"Target": target, "Source": source, "ReadOnly": "ro" in flags}
    if not source.startswith("/"):
        same = [m for m in asked if m.get("Target") == target]
        no_copy = bool(same and (same[0].get("VolumeOptions") or {}).get("NoCopy"))
        return {**mount, "Type": "volume", "VolumeOptions": {"NoCopy": no_copy}}
    propagation = next((flag for flag in flags if flag in _PROPAGATIONS), "")
    options_seen = {"Propagation": propagation, "NonRecursive": "rbind" not in flags}
    return {**mount, "Type": "bind", "BindOptions": options_seen}


def _podman_cpu_quota(expected: Mapping[str, Any], seen: Mapping[str, Any]) -> bool:
    """Podman turns NanoCpus into a CFS quota per period; true when that is all it is."""
    if "CpuPeriod" in expected or "CpuQuota" in expected:
        return False
    period, quota, nano = seen.get("CpuPeriod"), seen.get("CpuQuota"), expected.get("NanoCpus")
    if not (isinstance(period, int) and isinstance(quota, int) and isinstance(nano, int)):
        return False
    return period > 0 and quota * 1_000_000_000 == nano * period
