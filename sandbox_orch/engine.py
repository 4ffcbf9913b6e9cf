"""Reaching the container engine, and what it offers, with contract exit codes on failure."""

from __future__ import annotations

import docker
import docker.errors
import requests.exceptions

from .backend.docker import DockerBackend, connect
from .errors import InfrastructureError

HOW_TO_START = "start one with `make engine` (runs scripts/engine-up) or set DOCKER_HOST"


def docker_backend() -> DockerBackend:
    try:
        client = connect()
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
        raise InfrastructureError(f"no Docker engine answers ({error}); {HOW_TO_START}") from None
    return DockerBackend(client)
