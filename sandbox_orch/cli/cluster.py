"""`--backend kubernetes` and its options, shared by `run` and `doctor` (not a command).

Nothing here imports the Kubernetes client: the options parse to ClusterSettings only
when the command runs with `--backend kubernetes`, so `--help` stays light.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

_OPTIONS = [
    click.option(
        "--backend",
        type=click.Choice(["docker", "kubernetes"]),
        default="docker",
        show_default=True,
        help="Where the nodes run.",
    ),
    click.option("--context", help="kubeconfig context (--backend kubernetes).", default=None),
    click.option(
        "--namespace",
        help="Namespace, enforcing Pod Security restricted (--backend kubernetes).",
        default=None,
    ),
    click.option(
        "--runtime-class",
        "runtime_classes",
        multiple=True,
        metavar="OCI=CLASS",
        help="Map a policy's OCI runtime to a RuntimeClass (`runc=` for the cluster's "
        "default) (--backend kubernetes).",
    ),
    click.option(
        "--image",
        "images",
        multiple=True,
        metavar="NAME=REF@sha256:...",
        help="Map a policy's image to a pinned reference the cluster pulls (--backend kubernetes).",
    ),
]


def _refused(option: str, message: str) -> Exception:
    from ..errors import InputRefused, Problem

    return InputRefused([Problem(option, None, "", message)])


@dataclass(frozen=True)
class BackendChoice:
    """What `--backend` and its options said, as the command receives it (`cluster`)."""

    backend: str = "docker"
    context: str | None = None
    namespace: str | None = None
    runtime_classes: tuple[str, ...] = ()
    images: tuple[str, ...] = ()

    def settings(self) -> Any:
        """ClusterSettings, or None for docker; refused options raise InputRefused
        (called in the command, so that they exit 2 as any refused input)."""
        return cluster_settings(
            self.backend, self.context, self.namespace, self.runtime_classes, self.images
        )


def backend_options(command: F) -> F:
    """The options, handed to `command` as one `cluster: BackendChoice`."""

    @functools.wraps(command)
    def with_choice(*args: Any, **kwargs: Any) -> Any:
        names = ("backend", "context", "namespace", "runtime_classes", "images")
        choice = BackendChoice(**{name: kwargs.pop(name) for name in names})
        return command(*args, cluster=choice, **kwargs)

    wrapped: Any = with_choice
    for option in reversed(_OPTIONS):
        wrapped = option(wrapped)
    return wrapped


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, mapped = value.partition("=")
        if not sep or not key:
            raise _refused(option, f"{value!r}: expected NAME=VALUE")
        pairs[key] = mapped
    return pairs


def cluster_settings(
    backend: str,
    context: str | None,
    namespace: str | None,
    runtime_classes: tuple[str, ...],
    images: tuple[str, ...],
) -> Any:
    """ClusterSettings for `--backend kubernetes`, None for docker (which takes none of
    the cluster's options: given with it, they are refused rather than ignored)."""
    if backend == "docker":
        options = {
            "--context": context,
            "--namespace": namespace,
            "--runtime-class": runtime_classes,
            "--image": images,
        }
        given = [option for option, value in options.items() if value]
        if given:
            raise _refused(given[0], "only with --backend kubernetes")
        return None
    if not namespace:
        raise _refused("--namespace", "needed with --backend kubernetes")
    from ..backend.kubernetes.settings import ClusterSettings

    classes = _pairs(runtime_classes, "--runtime-class")
    return ClusterSettings(
        namespace=namespace,
        runtime_classes={oci: name or None for oci, name in classes.items()},
        images=_pairs(images, "--image"),
    )
