"""Reading a container back (backend/readback.py, DockerBackend.create) and the container
settings made by container_kwargs: pure, no engine. The engine's answer is modelled as
an engine echoes a create (the integration tests check the real engine agrees)."""

from __future__ import annotations

import asyncio
import copy
import json
from types import SimpleNamespace
from typing import Any

import docker
import pytest

from sandbox_orch.backend import ContainerSpec, SettingsDiffer, VolumeMount
from sandbox_orch.backend.docker import DockerBackend, container_kwargs
from sandbox_orch.backend.readback import (
    DEFAULT_MASKED_PATHS,
    DEFAULT_READONLY_PATHS,
    differences,
)
from sandbox_orch.mounts import BindMount
from sandbox_orch.sandbox import GVISOR_PIDS_BASE, GVISOR_PIDS_PER_TASK

API = docker.APIClient(version="1.41")  # only its create_host_config: no connection
IMAGE_ID = "sha256:" + "ab" * 32
IMAGE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
SECRET = "sk-do-not-print-me-9f8e7d"


def spec(runtime: str = "runc", **fields: Any) -> ContainerSpec:
    values: dict[str, Any] = {
        "name": "sandbox-orch-r1-build-1",
        "image": IMAGE_ID,
        "argv": ("sh", "-c", "make"),
        "user": "10001:10001",
        "labels": {"sandbox-orch.run": "r1", "sandbox-orch.node": "build"},
        "cpus": 1.0,
        "memory": 512 * 1024**2,
        "pids": 128,
        "tmpfs": {"/tmp": 64 * 1024**2},
        "pids_mechanism": "rlimit_nproc" if runtime == "runsc" else "cgroup",
        "env": {"HOME": "/tmp", "API_KEY": SECRET},
        "workdir": "/work",
        "oci_runtime": runtime,
        "mounts": (BindMount("/srv/project", "/work", read_only=True),),
        "volumes": (VolumeMount("sandbox-orch-r1-build-1-dist", "/out/dist", read_only=False),),
    }
    values.update(fields)
    return ContainerSpec(**values)


def echo(kwargs: dict[str, Any]) -> dict[str, Any]:
    """What the engine's inspect says of a container created with `kwargs`, faithfully:
    its own defaults added, the image's environment and labels merged in."""
    host = copy.deepcopy(dict(kwargs["host_config"]))
    host["RestartPolicy"] = {**host["RestartPolicy"], "MaximumRetryCount": 0}
    host.update(
        CapAdd=None, Devices=[], Binds=None, PidMode="", UTSMode="", UsernsMode="",
        Privileged=False, ShmSize=67108864, ConsoleSize=[0, 0], Isolation="",
        MaskedPaths=sorted(DEFAULT_MASKED_PATHS), ReadonlyPaths=sorted(DEFAULT_READONLY_PATHS),
        OomKillDisable=False, Sysctls=None, CgroupParent="", VolumesFrom=None,
    )  # fmt: skip
    points = []
    for mount in host["Mounts"]:
        point = {
            "Type": mount["Type"],
            "Destination": mount["Target"],
            "RW": not mount.get("ReadOnly", False),
        }
        if mount["Type"] == "volume":
            point.update(Name=mount["Source"], Source=f"/var/lib/docker/volumes/{mount['Source']}")
        else:
            point.update(Source=mount["Source"], Propagation=mount["BindOptions"]["Propagation"])
        points.append(point)
    env = [f"{k}={v}" for k, v in kwargs["environment"].items()]
    env += [f"{k}={v}" for k, v in IMAGE_ENV.items() if k not in kwargs["environment"]]
    return {
        "Name": f"/{kwargs['name']}",
        "Image": kwargs["image"],
        "AppArmorProfile": "",
        "HostConfig": host,
        "Mounts": points,
        "Config": {
            "User": kwargs["user"],
            "Cmd": kwargs["command"],
            "Env": env,
            "WorkingDir": kwargs["working_dir"],
            "Hostname": kwargs["hostname"],
            "Image": kwargs["image"],
            "Labels": {**kwargs["labels"], "org.opencontainers.image.title": "x"},
            "NetworkDisabled": kwargs["network_disabled"],
            "OpenStdin": False,
            "Tty": False,
            "Entrypoint": kwargs["entrypoint"],
        },
    }


@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_a_faithful_engine_differs_in_nothing(runtime):
    kwargs = container_kwargs(spec(runtime), API)
    assert differences(kwargs, echo(kwargs), IMAGE_ENV) == []


def _set(path: str, value: Any):
    def change(attrs: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = attrs
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        target[last] = value

    return change


def _env(entry: str):
    return lambda attrs: attrs["Config"]["Env"].append(entry)


def _secret_changed(attrs):
    env = attrs["Config"]["Env"]
    env[:] = [e for e in env if not e.startswith("API_KEY=")] + [f"API_KEY={SECRET}x"]


def _drop_host(key: str):
    return lambda attrs: attrs["HostConfig"].pop(key)


def _security(keep: str):
    return lambda attrs: attrs["HostConfig"].update(
        SecurityOpt=[o for o in attrs["HostConfig"]["SecurityOpt"] if keep in o]
    )


# (what the engine did, the setting that must be named)
ALTERATIONS = {
    "CapDrop dropped": (_drop_host("CapDrop"), "CapDrop"),
    "CapAdd added": (_set("HostConfig.CapAdd", ["SYS_ADMIN"]), "CapAdd"),
    "read-only root dropped": (_set("HostConfig.ReadonlyRootfs", False), "ReadonlyRootfs"),
    "no-new-privileges dropped": (_security("seccomp"), "SecurityOpt"),
    "seccomp profile dropped": (_security("no-new-privileges"), "SecurityOpt"),
    "seccomp unconfined": (
        lambda a: a["HostConfig"]["SecurityOpt"].append("seccomp=unconfined"),
        "SecurityOpt",
    ),
    "privileged": (_set("HostConfig.Privileged", True), "Privileged"),
    "bind mount made writable": (_set("HostConfig.Mounts.0.ReadOnly", False), "Mounts"),
    "bind mount writable as made": (_set("Mounts.0.RW", True), "mount /work"),
    "volume mounted read-only": (_set("Mounts.1.RW", False), "mount /out/dist"),
    "propagation shared": (_set("Mounts.0.Propagation", "rshared"), "mount /work"),
    "mount source moved": (_set("Mounts.0.Source", "/"), "mount /work"),
    "extra mount": (
        lambda a: a["Mounts"].append(
            {"Type": "bind", "Source": "/var/run/docker.sock", "Destination": "/s", "RW": True}
        ),
        "mount /s (not asked for)",
    ),
    "binds added": (_set("HostConfig.Binds", ["/:/host"]), "Binds"),
    "tmp executable": (_set("HostConfig.Tmpfs./tmp", "rw,size=67108864"), "Tmpfs"),
    "memory dropped": (_set("HostConfig.Memory", 0), "Memory"),
    "swap unlimited": (_set("HostConfig.MemorySwap", -1), "MemorySwap"),
    "cpus dropped": (_set("HostConfig.NanoCpus", 0), "NanoCpus"),
    "pids limit dropped": (_set("HostConfig.PidsLimit", None), "PidsLimit"),
    "ulimits dropped": (_set("HostConfig.Ulimits", []), "Ulimits"),
    "network bridge": (_set("HostConfig.NetworkMode", "bridge"), "NetworkMode"),
    "network enabled": (_set("Config.NetworkDisabled", False), "NetworkDisabled"),
    "ipc host": (_set("HostConfig.IpcMode", "host"), "IpcMode"),
    "pid host": (_set("HostConfig.PidMode", "host"), "PidMode"),
    "uts host": (_set("HostConfig.UTSMode", "host"), "UTSMode"),
    "userns host": (_set("HostConfig.UsernsMode", "host"), "UsernsMode"),
    "cgroupns host": (_set("HostConfig.CgroupnsMode", "host"), "CgroupnsMode"),
    "device added": (_set("HostConfig.Devices", [{"PathOnHost": "/dev/kmsg"}]), "Devices"),
    "sysctl added": (_set("HostConfig.Sysctls", {"kernel.x": "1"}), "Sysctls"),
    "runtime swapped": (_set("HostConfig.Runtime", "runc"), "Runtime"),
    "engine init added": (_set("HostConfig.Init", True), "Init"),
    "init dropped": (_set("Config.Entrypoint", None), "Entrypoint"),
    "image's entrypoint kept": (_set("Config.Entrypoint", ["/bin/sh"]), "Entrypoint"),
    "log driver changed": (
        _set("HostConfig.LogConfig", {"Type": "local", "Config": {}}),
        "LogConfig",
    ),
    "restart policy": (_set("HostConfig.RestartPolicy", {"Name": "always"}), "RestartPolicy"),
    "masked paths dropped": (_set("HostConfig.MaskedPaths", []), "MaskedPaths"),
    "readonly paths dropped": (_set("HostConfig.ReadonlyPaths", []), "ReadonlyPaths"),
    "user root": (_set("Config.User", "0:0"), "User"),
    "command changed": (_set("Config.Cmd", ["sh"]), "Cmd"),
    "hostname the container id": (_set("Config.Hostname", "29a92dfb954c"), "Hostname"),
    "image swapped": (_set("Image", "sha256:" + "cd" * 32), "Image"),
    "LD_PRELOAD injected": (_env("LD_PRELOAD=/tmp/x.so"), "Env LD_PRELOAD"),
    "image variable overridden": (_env("PATH=/tmp"), "Env PATH"),
    "secret value changed": (_secret_changed, "Env API_KEY"),
    "label dropped": (lambda a: a["Config"]["Labels"].pop("sandbox-orch.run"), "Labels"),
    "apparmor unconfined": (_set("AppArmorProfile", "unconfined"), "AppArmorProfile"),
}


@pytest.mark.parametrize("alteration", sorted(ALTERATIONS))
def test_an_altered_setting_is_named(alteration):
    change, setting = ALTERATIONS[alteration]
    kwargs = container_kwargs(spec("runsc"), API)
    attrs = echo(kwargs)
    change(attrs)
    found = differences(kwargs, attrs, IMAGE_ENV)
    assert setting in found, found
    assert SECRET not in json.dumps(found)


class StubAPI:
    """create/inspect/remove of the SDK's low-level client, with an inspect to answer."""

    def __init__(self, alter=None, inspect_fails: bool = False) -> None:
        self.alter, self.inspect_fails = alter, inspect_fails
        self.calls: list[str] = []
        self.kwargs: dict[str, Any] = {}

    def create_host_config(self, **options: Any) -> Any:
        return API.create_host_config(**options)

    def create_container(self, **kwargs: Any) -> dict[str, str]:
        self.calls.append("create")
        self.kwargs = kwargs
        return {"Id": "c0ffee" * 10}

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        self.calls.append("inspect")
        if self.inspect_fails:
            raise docker.errors.APIError("engine went away")
        attrs = echo(self.kwargs)
        if self.alter:
            self.alter(attrs)
        return attrs

    def inspect_image(self, image: str) -> dict[str, Any]:
        self.calls.append("inspect_image")
        return {"Id": IMAGE_ID, "Config": {"Env": [f"{k}={v}" for k, v in IMAGE_ENV.items()]}}

    def remove_container(self, container_id: str, **options: Any) -> None:
        self.calls.append("remove")


def create(api: StubAPI) -> str:
    backend = DockerBackend(SimpleNamespace(api=api, close=lambda: None))

    async def go() -> str:
        try:
            return await backend.create(spec("runc"))
        finally:
            await backend.close()

    return asyncio.run(go())


def test_create_returns_a_container_the_engine_made_as_asked():
    api = StubAPI()
    assert create(api) == "c0ffee" * 10
    assert api.calls == ["create", "inspect", "inspect_image"]


def test_create_removes_a_container_with_a_dropped_setting_and_names_it():
    api = StubAPI(alter=_drop_host("CapDrop"))
    with pytest.raises(SettingsDiffer) as caught:
        create(api)
    assert "CapDrop" in str(caught.value) and "removed before it started" in str(caught.value)
    assert api.calls[-1] == "remove" and "start" not in api.calls


def test_create_never_names_a_secret_value():
    api = StubAPI(alter=_secret_changed)
    with pytest.raises(SettingsDiffer) as caught:
        create(api)
    assert "Env API_KEY" in str(caught.value) and SECRET not in str(caught.value)


def test_a_failed_read_back_removes_the_container_too():
    api = StubAPI(inspect_fails=True)
    with pytest.raises(Exception, match="engine went away"):
        create(api)
    assert api.calls == ["create", "inspect", "remove"]


def test_every_node_has_a_private_cgroup_namespace():
    for runtime in ("runc", "runsc"):
        assert container_kwargs(spec(runtime), API)["host_config"]["CgroupnsMode"] == "private"


def test_gvisor_hides_its_cgroup_tree_and_runc_keeps_the_engines():
    runsc = container_kwargs(spec("runsc"), API)["host_config"]["Tmpfs"]
    runc = container_kwargs(spec("runc"), API)["host_config"]["Tmpfs"]
    assert runsc["/sys/fs/cgroup"].split(",")[0] == "ro" and "/sys/fs/cgroup" not in runc
    assert runsc["/tmp"] == runc["/tmp"]


def test_gvisor_gets_rlimit_nproc_and_the_cgroup_backstop():
    host = container_kwargs(spec("runsc", pids=100), API)["host_config"]
    assert host["PidsLimit"] == GVISOR_PIDS_PER_TASK * 100 + GVISOR_PIDS_BASE
    nproc = [u for u in host["Ulimits"] if u["Name"] == "nproc"]
    assert nproc == [{"Name": "nproc", "Soft": 100, "Hard": 100}]


def test_runc_gets_the_cgroup_limit_exactly_and_no_rlimit_nproc():
    host = container_kwargs(spec("runc", pids=100), API)["host_config"]
    assert host["PidsLimit"] == 100
    assert "nproc" not in {u["Name"] for u in host["Ulimits"]}


def test_the_image_environment_is_asked_once_per_id():
    api = StubAPI()
    backend = DockerBackend(SimpleNamespace(api=api, close=lambda: None))

    async def go() -> None:
        try:
            assert await backend.image_id("sandbox-orch/shell") == IMAGE_ID
            await backend.create(spec("runc"))
            await backend.create(spec("runc"))
        finally:
            await backend.close()

    asyncio.run(go())
    assert api.calls == ["inspect_image", "create", "inspect", "create", "inspect"]
