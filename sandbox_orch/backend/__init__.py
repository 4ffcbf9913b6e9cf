"""Container backends: the only place that talks to an engine."""

from .base import (
    BYTES_PER_INODE,
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
    inode_limit,
)

__all__ = [
    "BYTES_PER_INODE",
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
    "inode_limit",
]
