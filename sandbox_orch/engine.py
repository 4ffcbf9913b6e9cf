"""Reaching the container engine, and what it offers, with contract exit codes on failure."""

from __future__ import annotations

import os
from typing import cast, get_args

import docker
import docker.errors
import requests.exceptions

from .backend.docker import DockerBackend, VolumeSetting, connect
from .backend.engines import Engine, identify, pinged_podman, refusal
from .errors import InfrastructureError, InputRefused, Problem

HOW_TO_START = "start one with `sandbox-orch setup` (in a clone: `make engine`) or set DOCKER_HOST"
# Where artifact volumes live (backend/hostvolumes.py): auto, host or engine.
VOLUMES_ENV = "SANDBOX_ORCH_VOLUMES"


def volumes_setting() -> VolumeSetting:
    value = os.environ.get(VOLUMES_ENV) or "auto"
    choices = get_args(VolumeSetting)
    if value not in choices:
        message = f"must be one of {', '.join(choices)}, not {value!r}"
        raise InputRefused([Problem(f"${VOLUMES_ENV}", None, "", message)])
    return cast(VolumeSetting, value)


def docker_backend() -> DockerBackend:
    volumes = volumes_setting()
    try:
        client = connect()
        engine = _identify(client)
    except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
        raise InfrastructureError(f"no Docker engine answers ({error}); {HOW_TO_START}") from None
    refused = refusal(engine)
    if refused:
        client.close()
        raise InfrastructureError(refused)
    return DockerBackend(client, volumes=volumes, engine=engine)


def _identify(client: docker.DockerClient) -> Engine:
    """Docker or Podman (backend/engines.py), from the ping that checks the engine answers;
    only Podman is asked its version and `info` (rootless, cgroup version). On Docker the
    version stays unknown here (`doctor` asks it)."""
    api = client.api
    response = api._get(api._url("/_ping"))
    api._raise_for_status(response)
    if not pinged_podman(response.headers):
        return identify({}, {})
    return identify(client.version(), client.info())
