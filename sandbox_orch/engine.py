"""Reaching the container engine, and what it offers, with contract exit codes on failure."""

from __future__ import annotations

import os
from typing import Literal, cast

import docker
import docker.errors
import requests.exceptions

from .backend.docker import DockerBackend, connect
from .errors import InfrastructureError, InputRefused, Problem

HOW_TO_START = "start one with `make engine` (runs scripts/engine-up) or set DOCKER_HOST"
# Where artifact volumes live (backend/hostvolumes.py): auto, host or engine.
VOLUMES_ENV = "SANDBOX_ORCH_VOLUMES"
VOLUME_CHOICES = ("auto", "host", "engine")


def volumes_setting() -> Literal["auto", "host", "engine"]:
    value = os.environ.get(VOLUMES_ENV) or "auto"
    if value not in VOLUME_CHOICES:
        message = f"must be one of {', '.join(VOLUME_CHOICES)}, not {value!r}"
        raise InputRefused([Problem(f"${VOLUMES_ENV}", None, "", message)])
    return cast(Literal["auto", "host", "engine"], value)


def docker_backend() -> DockerBackend:
    volumes = volumes_setting()
    try:
        client = connect()
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
        raise InfrastructureError(f"no Docker engine answers ({error}); {HOW_TO_START}") from None
    return DockerBackend(client, volumes=volumes)
