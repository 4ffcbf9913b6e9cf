"""Reaching the container engine, and what it offers, with contract exit codes on failure."""

from __future__ import annotations

import os
from typing import cast, get_args

import docker
import docker.errors
import requests.exceptions

from .backend.docker import DockerBackend, VolumeSetting, connect
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
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
        raise InfrastructureError(f"no Docker engine answers ({error}); {HOW_TO_START}") from None
    return DockerBackend(client, volumes=volumes)
