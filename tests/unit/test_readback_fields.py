"""The read-back field by field (backend/readback.py): every part of a mount, the log
driver, the restart policy, the container's name, an image asked for by name, and the
environment as the engine lists it. Each is altered alone in an otherwise faithful
inspect and must be named; what a real engine reports differently from what was sent
(a tmpfs mount's empty source and propagation, a retry count of 0) must not be. Pure."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from sandbox_orch.backend.docker import container_kwargs
from sandbox_orch.backend.readback import differences, environment_of
from sandbox_orch.mounts import BindMount

from .test_readback import API, IMAGE_ENV, echo, spec

MASK = "/work/.sandbox-orch"
# A read-write project mount with the run store masked and a git directory kept read-only.
PROJECT = BindMount(
    "/srv/project", "/work", read_only=False, masks=(MASK,), read_only_inside=(".git",)
)


def engine_echo(kwargs: dict[str, Any]) -> dict[str, Any]:
    """echo(), with the tmpfs mounts reported as the engine reports them: no source (""),
    no propagation ("")."""
    host = kwargs["host_config"]
    tmpfs = [m for m in host["Mounts"] if m["Type"] == "tmpfs"]
    others = {**host, "Mounts": [m for m in host["Mounts"] if m["Type"] != "tmpfs"]}
    attrs = echo({**kwargs, "host_config": others})
    attrs["HostConfig"]["Mounts"] += copy.deepcopy(tmpfs)
    attrs["Mounts"] += [
        {"Type": "tmpfs", "Source": "", "Destination": m["Target"], "Mode": "", "RW": False,
         "Propagation": ""}
        for m in tmpfs
    ]  # fmt: skip
    return attrs


def project_kwargs(**fields: Any) -> dict[str, Any]:
    return container_kwargs(spec("runc", mounts=(PROJECT,), **fields), API)


def found_after(change, **fields: Any) -> list[str]:
    kwargs = project_kwargs(**fields)
    attrs = engine_echo(kwargs)
    change(attrs)
    return differences(kwargs, attrs, IMAGE_ENV)


def host_mount(attrs: dict[str, Any], target: str) -> dict[str, Any]:
    (mount,) = [m for m in attrs["HostConfig"]["Mounts"] if m["Target"] == target]
    return mount


def test_a_faithful_engine_with_masks_and_kept_git_paths_differs_in_nothing():
    kwargs = project_kwargs()
    targets = [m["Target"] for m in kwargs["host_config"]["Mounts"]]
    assert targets == ["/work", "/work/.git", MASK, "/out/dist"]
    assert differences(kwargs, engine_echo(kwargs), IMAGE_ENV) == []


def _host_mount_set(target: str, path: str, value: Any):
    def change(attrs: dict[str, Any]) -> None:
        mount = host_mount(attrs, target)
        *parents, last = path.split(".")
        for part in parents:
            mount = mount.setdefault(part, {})
        mount[last] = value

    return change


# Each field of a mount as HostConfig reports it, altered alone.
HOST_MOUNT_ALTERATIONS = {
    "type": _host_mount_set("/work", "Type", "volume"),
    "source": _host_mount_set("/work", "Source", "/"),
    "target": _host_mount_set("/work/.git", "Target", "/elsewhere"),
    "propagation": _host_mount_set("/work", "BindOptions.Propagation", "rshared"),
    "recursive": _host_mount_set("/work", "BindOptions.NonRecursive", False),
    "image copied into the volume": _host_mount_set("/out/dist", "VolumeOptions.NoCopy", False),
    "mask writable mode": _host_mount_set(MASK, "TmpfsOptions.Mode", 0o777),
    "mask bigger": _host_mount_set(MASK, "TmpfsOptions.SizeBytes", 1 << 30),
}


@pytest.mark.parametrize("alteration", sorted(HOST_MOUNT_ALTERATIONS))
def test_each_field_of_a_mount_is_compared(alteration):
    assert "Mounts" in found_after(HOST_MOUNT_ALTERATIONS[alteration])


def test_a_mount_the_engine_did_not_make_is_named():
    def drop(attrs: dict[str, Any]) -> None:
        attrs["Mounts"] = [p for p in attrs["Mounts"] if p["Destination"] != "/work/.git"]

    assert found_after(drop) == ["mount /work/.git"]


def test_a_mask_with_a_source_is_named():
    def source(attrs: dict[str, Any]) -> None:
        (point,) = [p for p in attrs["Mounts"] if p["Destination"] == MASK]
        point["Source"] = "/srv/project/.sandbox-orch"

    assert found_after(source) == [f"mount {MASK}"]


def _log(**changes: Any):
    def change(attrs: dict[str, Any]) -> None:
        attrs["HostConfig"]["LogConfig"] = {**attrs["HostConfig"]["LogConfig"], **changes}

    return change


def test_the_log_driver_and_its_options_are_each_compared():
    assert found_after(_log(Type="local")) == ["LogConfig"]  # same options, other driver
    assert found_after(_log(Config={"max-size": "1g", "max-file": "1"})) == ["LogConfig"]
    assert found_after(_log(Type="json-file"), engine_log=False) == ["LogConfig"]


def test_the_restart_policy_counts_retries_as_asked():
    def retries(attrs: dict[str, Any]) -> None:
        attrs["HostConfig"]["RestartPolicy"] = {"Name": "no", "MaximumRetryCount": 1}

    assert found_after(retries) == ["RestartPolicy"]


def test_a_container_under_another_name_is_named():
    def rename(attrs: dict[str, Any]) -> None:
        attrs["Name"] = "/someone-else"

    assert found_after(rename) == ["Name"]


def test_an_image_asked_for_by_name_is_compared_by_name():
    named = {"image": "sandbox-orch/shell"}
    assert found_after(lambda attrs: None, **named) == []

    def other(attrs: dict[str, Any]) -> None:
        attrs["Config"]["Image"] = "sandbox-orch/python"

    assert found_after(other, **named) == ["Image"]


def test_the_environment_is_read_as_the_engine_lists_it():
    assert environment_of(["A=b=c=d", "EMPTY=", "BARE"]) == {"A": "b=c=d", "EMPTY": "", "BARE": ""}
    assert environment_of(None) == {}


def test_a_value_containing_equals_signs_matches():
    env = {"HOME": "/tmp", "OPTS": "--a=1 --b=2"}
    assert found_after(lambda attrs: None, env=env) == []
