"""Artifacts between nodes: their volumes (volumes.py), how long each is kept and the
run-wide ceiling on them (lifetimes.py), and their copy to the host within a budget
(copy.py)."""

from __future__ import annotations

from ..lazyexports import lazy_exports

# Each name from the submodule that defines it, imported on first use: checking a
# workflow needs only lifetimes.py, not the volumes' event loop (the command line answers
# sooner).
_HOMES = {
    "MAX_DEPTH": "copy",
    "ONLY_PLAIN": "copy",
    "Budget": "copy",
    "Extracted": "copy",
    "apparent_size": "copy",
    "copy_tree": "copy",
    "extract": "copy",
    "ArtifactsRefused": "lifetimes",
    "Lifetimes": "lifetimes",
    "certain_peak": "lifetimes",
    "HOLDER_IMAGE": "volumes",
    "HOLDER_ROOT": "volumes",
    "ArtifactVolumes": "volumes",
    "HeldVolume": "volumes",
    "Usage": "volumes",
}


__getattr__ = lazy_exports(__name__, _HOMES)


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
