"""Artifacts between nodes: their volumes (volumes.py), how long each is kept and the
run-wide ceiling on them (lifetimes.py), and their copy to the host within a budget
(copy.py)."""

from .copy import MAX_DEPTH, ONLY_PLAIN, Budget, Extracted, apparent_size, copy_tree, extract
from .lifetimes import ArtifactsRefused, Lifetimes, certain_peak
from .volumes import HOLDER_IMAGE, HOLDER_ROOT, ArtifactVolumes, HeldVolume, Usage

__all__ = [
    "HOLDER_IMAGE",
    "HOLDER_ROOT",
    "MAX_DEPTH",
    "ONLY_PLAIN",
    "ArtifactVolumes",
    "ArtifactsRefused",
    "Budget",
    "Extracted",
    "HeldVolume",
    "Lifetimes",
    "Usage",
    "apparent_size",
    "certain_peak",
    "copy_tree",
    "extract",
]
