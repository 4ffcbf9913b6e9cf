"""Podman as the engine, without one: telling it from Docker (backend/engines.py), the
settings it needs (settings.py), its inspect read back in Docker's terms (readback.py),
the volume store before 4.8, OOM kills from the memory cgroup (oomwatch.py), and rootless
Podman on cgroup v1 refused. The make target `test-podman` runs the hardening suite on a
real Podman."""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sandbox_orch import engine as engine_module
from sandbox_orch.backend import BackendError, ExitStatus
from sandbox_orch.backend import docker as docker_module
from sandbox_orch.backend.base import VolumeMount
from sandbox_orch.backend.docker import DockerBackend, container_kwargs
from sandbox_orch.backend.engines import (
    DOCKER,
    PODMAN,
    Engine,
    identify,
    pinged_podman,
    refusal,
    version_tuple,
)
from sandbox_orch.backend.oomwatch import OomWatch, oom_kills
from sandbox_orch.backend.readback import (
    PODMAN_DEFAULT_CAPS,
    differences,
    podman_as_docker,
)
from sandbox_orch.backend.settings import PODMAN_NPROC, PODMAN_READ_ONLY_TMPFS
from sandbox_orch.errors import InfrastructureError
from sandbox_orch.mounts import BindMount
from sandbox_orch.seccomp import (
    NAMESPACE_FLAGS,
    PODMAN_PROFILE,
    PODMAN_PROFILE_PATH,
    podman_profile,
)
from tests.unit.test_readback import API, IMAGE_ENV, echo, spec

# As the engines answer on this machine (Docker 20.10.24 from Debian; Podman 4.3.1).
DOCKER_VERSION = {
    "Platform": {"Name": ""},
    "Components": [{"Name": "Engine", "Version": "20.10.24+dfsg1"}, {"Name": "runc"}],
    "Version": "20.10.24+dfsg1",
}
PODMAN_VERSION = {
    "Platform": {"Name": "linux/amd64/debian-12"},
    "Components": [{"Name": "Podman Engine", "Version": "4.3.1"}, {"Name": "Conmon"}],
    "Version": "4.3.1",
}
ROOTFUL_V1 = {"SecurityOptions": ["name=seccomp,profile=default"], "CgroupVersion": "1"}
ROOTLESS_V1 = {"SecurityOptions": ["name=seccomp,profile=default", "name=rootless"],
               "CgroupVersion": "1"}  # fmt: skip
ROOTLESS_V2 = {**ROOTLESS_V1, "CgroupVersion": "2"}
PODMAN_431 = Engine(PODMAN, "4.3.1", rootless=False, cgroup_version="1")


# --- engines.py ---------------------------------------------------------------------------


def test_docker_is_told_from_its_version():
    found = identify(DOCKER_VERSION, ROOTFUL_V1)
    assert found == Engine(DOCKER, "20.10.24+dfsg1", rootless=False, cgroup_version="1")
    assert not found.podman and found.tmpfs_volumes
    assert found.describe() == "Docker 20.10.24+dfsg1 (rootful, cgroup v1)"


def test_podman_is_told_from_its_component():
    found = identify(PODMAN_VERSION, ROOTFUL_V1)
    assert found == PODMAN_431 and found.podman
    assert found.describe() == "Podman 4.3.1 (rootful, cgroup v1)"


def test_rootless_and_unknown_fields():
    assert identify(PODMAN_VERSION, ROOTLESS_V2).describe() == "Podman 4.3.1 (rootless, cgroup v2)"
    # Without `info`: rootful, cgroup not said; without a version: Docker, "?".
    assert identify(PODMAN_VERSION, {}).describe() == "Podman 4.3.1 (rootful)"
    assert identify({}, {}) == Engine(DOCKER, "?", rootless=False, cgroup_version="")
    # A component named only "Podman" (or none with a name) is not Podman's engine.
    odd = {"Components": [{"Name": "Podman"}, {"Version": "1"}, "x"], "Version": "1"}
    assert identify(odd, {}).name == DOCKER


def test_rootless_podman_on_cgroup_v1_is_refused_with_its_reason():
    assert refusal(identify(PODMAN_VERSION, ROOTLESS_V1)) == (
        "rootless Podman 4.3.1 on cgroup v1 does not enforce the memory, cpu and pids "
        "limits (it drops them silently); use rootful Podman "
        "(DOCKER_HOST=unix:///run/podman/podman.sock) or a host with cgroup v2"
    )
    assert refusal(identify(PODMAN_VERSION, ROOTFUL_V1)) is None
    assert refusal(identify(PODMAN_VERSION, ROOTLESS_V2)) is None
    assert refusal(identify(DOCKER_VERSION, ROOTLESS_V1)) is None  # Docker's rootless: its own


@pytest.mark.parametrize(
    ("text", "parts"),
    [("4.3.1", (4, 3, 1)), ("4.9.0-rc1", (4, 9)), ("5", (5,)), ("?", ()), ("", ())],
)
def test_version_tuple(text, parts):
    assert version_tuple(text) == parts


@pytest.mark.parametrize(
    ("version", "capped"),
    [("4.3.1", False), ("4.7.9", False), ("4.8.0", True), ("4.10.1", True), ("5.0", True),
     ("?", False)],
)  # fmt: skip
def test_podman_caps_its_own_tmpfs_volumes_from_4_8(version, capped):
    assert Engine(PODMAN, version, False, "1").tmpfs_volumes is capped
    assert Engine(DOCKER, version, False, "1").tmpfs_volumes is True


class _Pinged:
    """A client whose engine answers `_ping` with `headers` (and counts what is asked)."""

    def __init__(self, headers: dict[str, str], version: dict, info: dict) -> None:
        self.asked: list[str] = []
        self.closed = False
        response = SimpleNamespace(headers=headers, status_code=200)
        self.api = SimpleNamespace(
            _url=lambda path: path,
            _get=lambda url: self.asked.append(url) or response,
            _raise_for_status=lambda _response: None,
        )
        self.version = lambda: self.asked.append("version") or version
        self.info = lambda: self.asked.append("info") or info

    def close(self) -> None:
        self.closed = True


PODMAN_PING = {"Api-Version": "1.41", "Libpod-Api-Version": "4.3.1", "Server": "Libpod/4.3.1"}
DOCKER_PING = {"Api-Version": "1.41", "Server": "Docker/20.10.24+dfsg1 (linux)"}


def test_podman_is_told_from_its_ping():
    assert pinged_podman(PODMAN_PING)
    assert pinged_podman({"libpod-api-version": "5.0"})
    assert not pinged_podman(DOCKER_PING)
    assert not pinged_podman({})


def test_docker_backend_refuses_rootless_podman_on_cgroup_v1(monkeypatch):
    client = _Pinged(PODMAN_PING, PODMAN_VERSION, ROOTLESS_V1)
    monkeypatch.setattr(engine_module, "connect", lambda: client)
    with pytest.raises(InfrastructureError) as raised:
        engine_module.docker_backend()
    assert str(raised.value) == refusal(identify(PODMAN_VERSION, ROOTLESS_V1))
    assert raised.value.exit_code == 3 and "\n" not in str(raised.value)
    assert client.closed


def test_docker_backend_asks_docker_nothing_but_the_ping(monkeypatch):
    docker_client = _Pinged(DOCKER_PING, DOCKER_VERSION, ROOTFUL_V1)
    monkeypatch.setattr(engine_module, "connect", lambda: docker_client)
    backend = engine_module.docker_backend()
    assert docker_client.asked == ["/_ping"] and backend.engine == identify({}, {})
    podman_client = _Pinged(PODMAN_PING, PODMAN_VERSION, ROOTFUL_V1)
    monkeypatch.setattr(engine_module, "connect", lambda: podman_client)
    backend = engine_module.docker_backend()
    assert podman_client.asked == ["/_ping", "version", "info"]
    assert backend.engine == PODMAN_431 and not podman_client.closed


# --- settings.py ----------------------------------------------------------------------------


def test_podman_gets_an_nproc_ceiling_read_only_run_and_its_seccomp_profile():
    host = container_kwargs(spec("runc"), API, podman=True)["host_config"]
    assert host["Ulimits"] == [
        {"Name": "nofile", "Soft": 1024, "Hard": 1024},
        {"Name": "core", "Soft": 0, "Hard": 0},
        {"Name": "nproc", "Soft": PODMAN_NPROC, "Hard": PODMAN_NPROC},
    ]
    assert PODMAN_NPROC == 4096
    assert host["Tmpfs"] == {
        "/run": "ro,noexec,nosuid,nodev,size=4k",
        "/var/tmp": "ro,noexec,nosuid,nodev,size=4k",
        "/tmp": f"rw,noexec,nosuid,nodev,size={64 * 1024**2}",
    }
    assert host["SecurityOpt"] == ["no-new-privileges", f"seccomp={PODMAN_PROFILE_PATH}"]


def test_docker_gets_none_of_podmans_settings():
    host = container_kwargs(spec("runc"), API)["host_config"]
    assert [u["Name"] for u in host["Ulimits"]] == ["nofile", "core"]
    assert host["Tmpfs"] == {"/tmp": f"rw,noexec,nosuid,nodev,size={64 * 1024**2}"}
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert container_kwargs(spec("runc"), API, podman=False) == container_kwargs(spec("runc"), API)


def test_on_podman_a_gvisor_node_keeps_its_own_nproc_and_profile():
    host = container_kwargs(spec("runsc"), API, podman=True)["host_config"]
    nproc = [u for u in host["Ulimits"] if u["Name"] == "nproc"]
    assert nproc == [{"Name": "nproc", "Soft": 128, "Hard": 128}]  # the node's own pids
    assert host["SecurityOpt"][1].startswith("seccomp={")  # gVisor's, inline


def test_a_spec_tmpfs_at_run_wins_over_podmans_read_only_one():
    host = container_kwargs(spec(tmpfs={"/run": 1 << 20}), API, podman=True)["host_config"]
    assert host["Tmpfs"]["/run"] == "rw,noexec,nosuid,nodev,size=1048576"
    assert host["Tmpfs"]["/var/tmp"] == PODMAN_READ_ONLY_TMPFS["/var/tmp"]


# A host-store producer volume and a consumer's read-only view (artifacts/volumes.py).
HOST_VOLUMES = (
    VolumeMount("v-dist", "/out/dist", False, BindMount("/run/so/v-dist", "/out/dist", False)),
    VolumeMount("v-in-ro", "/in/x", False, BindMount("/run/so/v-in-ro", "/in/x", True)),
)


def test_on_podman_host_volumes_are_non_recursive_private_binds_of_their_mounts():
    mounts = container_kwargs(spec(volumes=HOST_VOLUMES), API, podman=True)["host_config"]
    assert mounts["Mounts"][-2:] == [
        {"Target": "/out/dist", "Source": "/run/so/v-dist", "Type": "bind", "ReadOnly": False,
         "BindOptions": {"Propagation": "rprivate", "NonRecursive": True}},
        {"Target": "/in/x", "Source": "/run/so/v-in-ro", "Type": "bind", "ReadOnly": True,
         "BindOptions": {"Propagation": "rprivate", "NonRecursive": True}},
    ]  # fmt: skip


def test_docker_mounts_host_volumes_as_named_volumes_as_before():
    host = container_kwargs(spec(volumes=HOST_VOLUMES), API)["host_config"]
    assert host["Mounts"][-2:] == [
        {"Target": "/out/dist", "Source": "v-dist", "Type": "volume", "ReadOnly": False,
         "VolumeOptions": {"NoCopy": True}},
        {"Target": "/in/x", "Source": "v-in-ro", "Type": "volume", "ReadOnly": False,
         "VolumeOptions": {"NoCopy": True}},
    ]  # fmt: skip
    plain = tuple(VolumeMount(v.volume, v.target, v.read_only) for v in HOST_VOLUMES)
    assert container_kwargs(spec(volumes=HOST_VOLUMES), API) == container_kwargs(
        spec(volumes=plain), API
    )


def test_on_podman_an_engine_store_volume_stays_a_named_volume():
    engine = (VolumeMount("v-held", "/held", True),)
    host = container_kwargs(spec(volumes=engine), API, podman=True)["host_config"]
    assert host["Mounts"][-1] == {
        "Target": "/held", "Source": "v-held", "Type": "volume", "ReadOnly": True,
        "VolumeOptions": {"NoCopy": True},
    }  # fmt: skip


def test_podmans_report_of_host_volume_binds_is_read_as_asked():
    kwargs = container_kwargs(spec(volumes=HOST_VOLUMES), API, podman=True)
    attrs = podman_echo(kwargs)
    attrs["HostConfig"]["Mounts"] = None
    attrs["HostConfig"]["Binds"] = [
        "/srv/project:/work:ro,rprivate,bind",
        "/run/so/v-dist:/out/dist:rw,rprivate,bind,noexec,nosuid,nodev",
        "/run/so/v-in-ro:/in/x:ro,rprivate,bind,noexec,nosuid,nodev",
    ]
    assert differences(kwargs, attrs, IMAGE_ENV, podman=True) == []
    attrs["HostConfig"]["Binds"][2] = "/run/so/v-in-ro:/in/x:rw,rprivate,bind,noexec"
    assert differences(kwargs, attrs, IMAGE_ENV, podman=True) == ["Mounts"]  # a view writable


# --- seccomp.py -------------------------------------------------------------------------------


def test_podmans_profile_refuses_namespaces_and_clone3_as_docker_does():
    profile = podman_profile()
    assert profile["defaultAction"] == "SCMP_ACT_ALLOW"
    assert profile["syscalls"][-1] == {
        "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38,
    }  # fmt: skip
    refused = {
        (rule["names"][0], rule["args"][0]["value"])
        for rule in profile["syscalls"]
        if rule.get("args")
    }
    for name in ("clone", "unshare"):
        for flag in NAMESPACE_FLAGS.values():
            assert (name, flag) in refused
    for name in ("setns", "mount", "keyctl", "ptrace", "bpf"):
        assert name in profile["syscalls"][0]["names"]
    assert json.loads(PODMAN_PROFILE) == profile
    assert PODMAN_PROFILE_PATH.startswith("/run/sandbox-orch/seccomp/podman-")
    assert PODMAN_PROFILE_PATH.endswith(".json") and len(Path(PODMAN_PROFILE_PATH).stem) == 23


# --- readback.py --------------------------------------------------------------------------


def podman_echo(kwargs: dict[str, Any]) -> dict[str, Any]:
    """What Podman 4.3.1's Docker API says of a container created with `kwargs`, as seen
    on this machine: its own words, its defaults, no masked paths, no NetworkDisabled."""
    attrs = echo(kwargs)
    host = attrs["HostConfig"]
    host.update(
        IpcMode="shareable" if host["IpcMode"] == "private" else host["IpcMode"],
        Runtime="oci",
        CapDrop=sorted(PODMAN_DEFAULT_CAPS),
        LogConfig={"Type": host["LogConfig"]["Type"], "Config": None},
        CgroupnsMode="",
        PidMode="private",
        UTSMode="private",
        CpuPeriod=100000,
        CpuQuota=host["NanoCpus"] * 100000 // 1_000_000_000,
        MemorySwappiness=-1,
        MaskedPaths=None,
        ReadonlyPaths=None,
        Tmpfs={path: f"{options},rprivate,tmpcopyup" for path, options in host["Tmpfs"].items()},
        Ulimits=[
            {"Name": f"RLIMIT_{u['Name'].upper()}", "Soft": u["Soft"], "Hard": u["Hard"]}
            for u in host["Ulimits"]
        ],
    )
    config = attrs["Config"]
    del config["NetworkDisabled"]
    config["Env"] = ["container=podman", *config["Env"], "TERM=xterm", "HOSTNAME=sandbox"]
    return attrs


def podman_kwargs() -> dict[str, Any]:
    return container_kwargs(spec("runc"), API, podman=True)


def test_podmans_faithful_answer_differs_in_nothing():
    kwargs = podman_kwargs()
    assert differences(kwargs, podman_echo(kwargs), IMAGE_ENV, podman=True) == []


def test_podmans_answer_read_as_docker_s_fails_closed():
    kwargs = podman_kwargs()
    assert differences(kwargs, podman_echo(kwargs), IMAGE_ENV) == [
        "IpcMode", "CapDrop", "LogConfig", "Tmpfs", "Runtime",
        "CgroupnsMode", "PidMode", "UTSMode", "CpuPeriod", "CpuQuota", "MemorySwappiness",
        "MaskedPaths", "ReadonlyPaths", "NetworkDisabled",
        "Env container", "Env TERM", "Env HOSTNAME",
    ]  # fmt: skip


def _podman_changed(path: str, value: Any) -> list[str]:
    kwargs = podman_kwargs()
    attrs = podman_echo(kwargs)
    *parents, last = path.split(".")
    target = attrs
    for part in parents:
        target = target[part]
    target[last] = value
    return differences(kwargs, attrs, IMAGE_ENV, podman=True)


@pytest.mark.parametrize(
    ("path", "value", "found"),
    [
        ("HostConfig.IpcMode", "host", ["IpcMode"]),
        ("HostConfig.Runtime", "crun", ["Runtime"]),
        ("HostConfig.CapDrop", sorted(PODMAN_DEFAULT_CAPS - {"NET_RAW"}), ["CapDrop"]),
        ("HostConfig.CapAdd", ["NET_RAW"], ["CapAdd"]),
        ("HostConfig.LogConfig", {"Type": "k8s-file", "Config": None}, ["LogConfig"]),
        ("HostConfig.LogConfig", {"Type": "json-file", "Config": {"max-size": "9m"}},
         ["LogConfig"]),
        ("Config.OpenStdin", True, ["OpenStdin"]),
        ("Config.Tty", True, ["Tty"]),
        ("HostConfig.CgroupnsMode", "host", ["CgroupnsMode"]),
        ("HostConfig.PidMode", "host", ["PidMode"]),
        ("HostConfig.UTSMode", "host", ["UTSMode"]),
        ("HostConfig.MemorySwappiness", 60, ["MemorySwappiness"]),
        ("HostConfig.CpuQuota", 200000, ["CpuPeriod", "CpuQuota"]),
        ("HostConfig.CpuPeriod", 0, ["CpuQuota"]),  # 0: the default period, and empty
        ("HostConfig.CpuPeriod", "100000", ["CpuPeriod", "CpuQuota"]),
        ("HostConfig.NetworkMode", "bridge", ["NetworkMode", "NetworkDisabled"]),
        ("HostConfig.Tmpfs./tmp", "rw,nosuid,nodev,size=67108864,rprivate,tmpcopyup", ["Tmpfs"]),
        ("HostConfig.Tmpfs./run", "rw,rprivate,nosuid,nodev,tmpcopyup", ["Tmpfs"]),
        ("HostConfig.Ulimits", [{"Name": "RLIMIT_NOFILE", "Soft": 1024, "Hard": 1024}],
         ["Ulimits"]),
        ("Config.Env", ["container=docker", "HOME=/tmp", f"API_KEY={'x'}"],
         ["Env API_KEY", "Env container"]),
    ],
)  # fmt: skip
def test_each_podman_difference_is_still_caught(path, value, found):
    assert _podman_changed(path, value) == found


def test_podmans_hostname_variable_must_be_the_hostname_asked():
    kwargs = podman_kwargs()
    attrs = podman_echo(kwargs)
    attrs["Config"]["Env"][-1] = "HOSTNAME=elsewhere"
    assert differences(kwargs, attrs, IMAGE_ENV, podman=True) == ["Env HOSTNAME"]


def test_podman_as_docker_translates_only_what_podman_says_exactly():
    asked = podman_kwargs()["host_config"]
    seen = podman_as_docker(asked, {"IpcMode": "none", "Runtime": "runc", "CpuPeriod": 100000})
    assert seen == {
        "IpcMode": "none", "Runtime": "runc", "CpuPeriod": 100000,
        "CgroupnsMode": "private", "LogConfig": {"Config": asked["LogConfig"]["Config"]},
    }  # fmt: skip
    # Asked for explicitly, a CPU period is compared as asked, never explained away.
    explicit = {**asked, "CpuPeriod": 50000}
    assert podman_as_docker(explicit, {"CpuPeriod": 100000, "CpuQuota": 100000})["CpuQuota"]
    # A capability drop other than ALL is compared as reported.
    some = {**asked, "CapDrop": ["NET_RAW"]}
    assert podman_as_docker(some, {"CapDrop": sorted(PODMAN_DEFAULT_CAPS)})["CapDrop"] == sorted(
        PODMAN_DEFAULT_CAPS
    )
    # A value the engine did not fill in stays absent; one asked for is not removed.
    assert "PidMode" not in podman_as_docker(asked, {})
    assert podman_as_docker({**asked, "PidMode": "private"}, {"PidMode": "private"})["PidMode"]


def test_docker_s_own_answer_is_read_as_before():
    """The Docker path: the same echo, the same verdict, with or without RLIMIT_ names."""
    kwargs = container_kwargs(spec("runc"), API)
    attrs = echo(kwargs)
    assert differences(kwargs, attrs, IMAGE_ENV) == []
    attrs["HostConfig"]["Ulimits"] = [
        {"Name": f"RLIMIT_{u['Name'].upper()}", "Soft": u["Soft"], "Hard": u["Hard"]}
        for u in attrs["HostConfig"]["Ulimits"]
    ]
    assert differences(kwargs, attrs, IMAGE_ENV) == []
    missing = copy.deepcopy(attrs)
    missing["HostConfig"]["MaskedPaths"] = None
    assert differences(kwargs, missing, IMAGE_ENV) == ["MaskedPaths"]


# --- docker.py on Podman: volume store, OOM ---------------------------------------------------


def podman_backend(volumes: str = "auto", version: str = "4.3.1") -> DockerBackend:
    engine = Engine(PODMAN, version, rootless=False, cgroup_version="1")
    return DockerBackend(SimpleNamespace(api=SimpleNamespace(), close=lambda: None),
                         volumes=volumes, engine=engine)  # fmt: skip


@pytest.mark.parametrize("volumes", ["auto", "engine"])
def test_podman_before_4_8_keeps_volumes_on_this_host(monkeypatch, volumes):
    monkeypatch.setattr(docker_module.hostvolumes, "unavailable", lambda _path: None)
    backend = podman_backend(volumes)
    assert asyncio.run(backend.volume_store()) == "host"
    assert backend.volume_store_reason == "the engine shares this host's mounts"


def test_podman_before_4_8_without_host_volumes_is_an_engine_error(monkeypatch):
    monkeypatch.setattr(
        docker_module.hostvolumes, "unavailable", lambda _path: "mounting needs root"
    )
    with pytest.raises(BackendError) as raised:
        asyncio.run(podman_backend().volume_store())
    assert str(raised.value) == (
        "Podman 4.3.1 cannot cap the size of its own volumes (before 4.8), and volumes "
        "cannot be kept on this host: mounting needs root"
    )


def test_podman_from_4_8_may_keep_volumes_in_the_engine(monkeypatch):
    monkeypatch.setattr(
        docker_module.hostvolumes, "unavailable", lambda _path: "mounting needs root"
    )
    backend = podman_backend("engine", "4.8.0")
    assert asyncio.run(backend.volume_store()) == "engine"
    assert asyncio.run(podman_backend("auto", "4.9.3").volume_store()) == "engine"


class _Watch:
    def __init__(self, killed: bool, done: bool = True) -> None:
        self.killed = killed
        self.done = threading.Event()
        if done:
            self.done.set()


def _collect(backend: DockerBackend, code: int) -> ExitStatus:
    return backend._collect("c1", docker_module.Exit(code, oom_seen=False))


def test_podman_oom_is_the_kernel_count_for_an_unexplained_sigkill():
    backend = podman_backend()
    backend._oom_watches["c1"] = _Watch(killed=True)
    assert _collect(backend, 137) == ExitStatus(137, oom_killed=True)
    assert _collect(backend, 1) == ExitStatus(1, oom_killed=False)  # not a SIGKILL
    backend._killed.add("c1")  # our own kill (timeout, cancel): never OOM
    assert _collect(backend, 137) == ExitStatus(137, oom_killed=False)


def test_podman_sigkill_without_an_oom_count_or_a_watch_is_not_oom(monkeypatch):
    monkeypatch.setattr(docker_module, "OOM_EVENT_WINDOW_S", 0.01)
    backend = podman_backend()
    backend._oom_watches["c1"] = _Watch(killed=False, done=False)  # still waiting: bounded
    assert _collect(backend, 137) == ExitStatus(137, oom_killed=False)
    del backend._oom_watches["c1"]
    assert _collect(backend, 137) == ExitStatus(137, oom_killed=False)


# --- oomwatch.py ------------------------------------------------------------------------------


def test_oom_kills_reads_the_kernel_count():
    assert oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n") == 3
    assert oom_kills("oom_kill_disable 0\nunder_oom 1\n") == 0  # a kernel without the count
    assert oom_kills("oom_kill x\noom_kills 2\n") == 0


def test_a_watch_reads_a_kill_counted_before_it_registered(tmp_path):
    cgroup = tmp_path / "libpod_parent" / "libpod-c1"
    cgroup.mkdir(parents=True)
    (cgroup / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    watch = OomWatch("c1", root=tmp_path, timeout_s=5)
    assert watch.done.wait(5)
    assert watch.watching and watch.killed
    written = (cgroup / "cgroup.event_control").read_text().split()
    assert len(written) == 2 and all(part.isdigit() for part in written)


def test_a_watch_whose_cgroup_never_appears_knows_nothing(tmp_path):
    watch = OomWatch("c2", root=tmp_path, timeout_s=0.05)
    assert watch.done.wait(5)
    assert (watch.watching, watch.killed) == (False, False)


def test_a_stopped_watch_ends(tmp_path):
    watch = OomWatch("c3", root=tmp_path, timeout_s=60)
    watch.stop()
    assert watch.done.wait(5) and not watch.watching


def test_podmans_binds_are_read_as_the_mounts_asked():
    """Podman reports a container's mounts as `Binds` (HostConfig.Mounts null)."""
    kwargs = podman_kwargs()
    attrs = podman_echo(kwargs)
    attrs["HostConfig"]["Mounts"] = None
    attrs["HostConfig"]["Binds"] = [
        "/srv/project:/work:ro,rprivate,bind",
        "sandbox-orch-r1-build-1-dist:/out/dist:rw,rprivate,nosuid,nodev,rbind",
    ]
    assert differences(kwargs, attrs, IMAGE_ENV, podman=True) == []
    for changed in (
        "/srv/project:/work:rw,rprivate,bind",  # writable
        "/srv/project:/work:ro,rprivate,rbind",  # recursive
        "/srv/project:/work:ro,rshared,bind",  # another propagation
        "/srv/elsewhere:/work:ro,rprivate,bind",  # another source
    ):
        attrs["HostConfig"]["Binds"][0] = changed
        assert differences(kwargs, attrs, IMAGE_ENV, podman=True) == ["Mounts"], changed
    attrs["HostConfig"]["Binds"] = attrs["HostConfig"]["Binds"][1:]  # one missing
    assert differences(kwargs, attrs, IMAGE_ENV, podman=True) == ["Mounts"]


def test_podman_bind_entries_exactly():
    from sandbox_orch.backend.readback import _podman_bind

    asked = [{"Target": "/v", "VolumeOptions": {"NoCopy": True}}, {"Target": "/w"}]
    assert _podman_bind("/a:/b:ro,rslave,bind", asked) == {
        "Target": "/b", "Source": "/a", "ReadOnly": True, "Type": "bind",
        "BindOptions": {"Propagation": "rslave", "NonRecursive": True},
    }  # fmt: skip
    assert _podman_bind("/a:/b:rw,rbind", asked)["BindOptions"] == {
        "Propagation": "", "NonRecursive": False,
    }  # fmt: skip
    assert _podman_bind("vol:/v:rw,rprivate,rbind", asked) == {
        "Target": "/v", "Source": "vol", "ReadOnly": False, "Type": "volume",
        "VolumeOptions": {"NoCopy": True},
    }  # fmt: skip
    assert _podman_bind("vol:/w:ro", asked)["VolumeOptions"] == {"NoCopy": False}
    assert _podman_bind("vol:/x", asked) == {
        "Target": "/x", "Source": "vol", "ReadOnly": False, "Type": "volume",
        "VolumeOptions": {"NoCopy": False},
    }  # fmt: skip


def test_podmans_profile_file_is_written_once_on_its_host(monkeypatch, tmp_path):
    path = tmp_path / "seccomp" / "podman-x.json"
    monkeypatch.setattr(docker_module, "PODMAN_PROFILE_PATH", str(path))
    monkeypatch.setattr(docker_module.hostvolumes, "unavailable", lambda _path: None)
    backend = podman_backend()
    backend._write_podman_profile()
    assert path.read_text() == PODMAN_PROFILE and backend._profile_written
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    path.write_text("{}")  # not ours: written again
    backend._write_podman_profile()
    assert path.read_text() == PODMAN_PROFILE
    assert sorted(p.name for p in path.parent.iterdir()) == ["podman-x.json"]


def test_podmans_profile_needs_the_engine_on_this_host(monkeypatch):
    monkeypatch.setattr(
        docker_module.hostvolumes,
        "unavailable",
        lambda _path: "the engine runs in another PID namespace",
    )
    with pytest.raises(BackendError) as raised:
        podman_backend()._write_podman_profile()
    assert str(raised.value) == (
        "Podman's seccomp profile cannot be put on its host: the engine runs in another "
        "PID namespace"
    )


@pytest.mark.parametrize(
    ("asked", "period", "quota", "explained"),
    [
        ({"NanoCpus": 1_000_000_000}, 100000, 100000, True),
        ({"NanoCpus": 500_000_000}, 100000, 50000, True),
        ({"NanoCpus": 1_000_000_000}, 1, 1, True),  # any period: the ratio is the limit
        ({"NanoCpus": 1_000_000_000}, 100000, 100001, False),
        ({"NanoCpus": 0}, 0, 0, False),  # no period: nothing to explain
        ({"NanoCpus": 1_000_000_000}, -100000, -100000, False),
        ({}, 1_000_000_000, 1, False),  # no NanoCpus asked: Podman's own quota, flagged
        ({}, 100000, 0, False),
        ({"NanoCpus": 1_000_000_000}, "100000", 100000, False),
        ({"NanoCpus": 1_000_000_000}, 100000, None, False),
        ({"NanoCpus": 1_000_000_000, "CpuQuota": 100000}, 100000, 100000, False),
        ({"NanoCpus": 1_000_000_000, "CpuPeriod": 100000}, 100000, 100000, False),
    ],
)
def test_podmans_cpu_quota_is_explained_only_by_the_cpus_asked(asked, period, quota, explained):
    seen = podman_as_docker(asked, {"CpuPeriod": period, "CpuQuota": quota})
    assert ("CpuPeriod" not in seen and "CpuQuota" not in seen) is explained
    if not explained:
        assert (seen["CpuPeriod"], seen["CpuQuota"]) == (period, quota)


def test_podmans_log_options_are_taken_as_asked_only_when_it_reports_none():
    asked = {"LogConfig": {"Type": "json-file", "Config": {"max-size": "1m"}}}
    assert podman_as_docker(asked, {"LogConfig": {"Type": "json-file", "Config": None}}) == {
        "LogConfig": {"Type": "json-file", "Config": {"max-size": "1m"}},
    }
    reported = {"LogConfig": {"Type": "json-file", "Config": {"max-size": "9m"}}}
    assert podman_as_docker(asked, reported) == reported
    # Not asked for: left as reported (and then flagged as a setting nobody asked for).
    unasked = {"LogConfig": {"Type": "json-file", "Config": None}}
    assert podman_as_docker({}, unasked) == unasked


def test_podman_bind_entries_split_at_the_first_two_colons():
    from sandbox_orch.backend.readback import _podman_bind

    assert _podman_bind("/a:/b:ro:x", []) == {
        "Target": "/b", "Source": "/a", "ReadOnly": False, "Type": "bind",
        "BindOptions": {"Propagation": "", "NonRecursive": True},
    }  # fmt: skip
    assert _podman_bind("/a", []) == {
        "Target": "", "Source": "/a", "ReadOnly": False, "Type": "bind",
        "BindOptions": {"Propagation": "", "NonRecursive": True},
    }  # fmt: skip


def test_podmans_binds_are_read_only_when_it_reports_no_mounts():
    asked = podman_kwargs()["host_config"]
    reported = {"Mounts": [], "Binds": ["/srv/project:/work:ro,rprivate,bind"]}
    seen = podman_as_docker(asked, reported)
    assert (seen["Mounts"], seen["Binds"]) == ([], reported["Binds"])
    assert podman_as_docker(asked, {"Mounts": None, "Binds": []})["Mounts"] is None
    unasked = podman_as_docker({**asked, "Mounts": []}, {"Binds": reported["Binds"]})
    assert unasked["Binds"] == reported["Binds"] and "Mounts" not in unasked
