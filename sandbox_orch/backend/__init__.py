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
    SettingsDiffer,
    Stream,
    Volume,
    VolumeMount,
    VolumeStore,
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
    "SettingsDiffer",
    "Stream",
    "Volume",
    "VolumeMount",
    "VolumeStore",
]
