"""Container backends: the only place that talks to an engine."""

from .base import (
    Backend,
    BackendError,
    ContainerSpec,
    ExitStatus,
    ImageMissing,
    OutputSink,
    Resource,
    Stream,
)

__all__ = [
    "Backend",
    "BackendError",
    "ContainerSpec",
    "ExitStatus",
    "ImageMissing",
    "OutputSink",
    "Resource",
    "Stream",
]
