"""Container backends: the only place that talks to an engine."""

from .base import (
    Backend,
    BackendError,
    ContainerSpec,
    ExitStatus,
    ImageMissing,
    OutputSink,
    Resource,
    ResourceKind,
    Stream,
    VolumeMount,
)

__all__ = [
    "Backend",
    "BackendError",
    "ContainerSpec",
    "ExitStatus",
    "ImageMissing",
    "OutputSink",
    "Resource",
    "ResourceKind",
    "Stream",
    "VolumeMount",
]
