"""Rules on image patterns: wildcards over everything, a registry or a namespace, and
images not pinned by digest (SO501-SO506)."""

from __future__ import annotations

import re

from .checking import LOCAL_IMAGE_NAMESPACE, _Review
from .egress import _WILDCARD_CHARS

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def _looks_like_registry(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost"


def _check_images(r: _Review) -> None:
    for index, pattern in enumerate(r.data.get("images") or ()):
        loc = ("images", index)
        positions = [i for i, c in enumerate(pattern) if c in _WILDCARD_CHARS]
        if not positions:
            if _DIGEST.search(pattern):
                continue
            if pattern.startswith(LOCAL_IMAGE_NAMESPACE):
                r.add("SO506", loc, f"image {pattern} is not pinned (local build)")
            else:
                r.add("SO505", loc, f"image {pattern} is not pinned by digest")
            continue
        prefix = pattern[: positions[0]]
        if "/" not in prefix:
            r.add("SO501", loc, f"image pattern {pattern!r} matches any image")
            continue
        first, rest = prefix.split("/", 1)
        if _looks_like_registry(first) and ("/" not in rest or rest == "library/"):
            # `docker.io/*`, `ghcr.io/my*` (any namespace starting so): the whole registry
            r.add("SO502", loc, f"image pattern {pattern!r} matches any image on {first}")
        elif prefix.startswith(LOCAL_IMAGE_NAMESPACE):
            r.add("SO504", loc, f"image pattern {pattern!r} matches any local sandbox-orch image")
        else:
            r.add("SO503", loc, f"image pattern {pattern!r} matches a whole namespace")
