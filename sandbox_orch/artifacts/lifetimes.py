"""How long an artifact volume is needed, and the run-wide ceiling on what is held. Pure.

Artifact volumes are memory. A volume is needed while its producer may still run an
attempt that uses it, and while some consumer that could mount it has not finished;
consumers that are skipped, cancelled or failed count as finished (they will never mount
it). Once it is not needed (and copied to the host), it is released at once.

The policy's `limits.artifacts_total` bounds the sum of the caps of the volumes held at
once: a producer attempt reserves count x cap before its volumes are created, and a
release gives its share back. A reservation that would pass the ceiling fails the node
before its container starts, with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..planning import PlannedNode
from ..units import format_size


class ArtifactsRefused(Exception):
    """A producer's volumes would take the run past the policy's artifacts_total."""


class Lifetimes:
    def __init__(self, nodes: Mapping[str, PlannedNode], ceiling: int) -> None:
        self.ceiling = ceiling
        self.reserved = 0
        self.final: set[str] = set()  # nodes that will run no further attempt
        self.consumers: dict[tuple[str, str], set[str]] = {}  # (producer, artifact) -> nodes
        for node in nodes.values():
            for needed in node.inputs:
                key = (needed.producer, needed.name)
                self.consumers.setdefault(key, set()).add(node.name)

    def reserve(self, sizes: Iterable[int]) -> None:
        """Reserve one producer attempt's volumes, all or nothing."""
        sizes = list(sizes)
        wanted = sum(sizes)
        if self.reserved + wanted > self.ceiling:
            held = format_size(self.reserved) if self.reserved else "nothing"
            raise ArtifactsRefused(
                f"its {len(sizes)} artifact volume(s) ({format_size(wanted)}) would take the "
                f"run's artifacts past the policy's artifacts_total ({format_size(self.ceiling)}); "
                f"volumes still needed by other nodes hold {held}"
            )
        self.reserved += wanted

    def free(self, size: int) -> None:
        self.reserved = max(0, self.reserved - size)

    def finished(self, node: str) -> None:
        """`node` will run no further attempt (succeeded, failed, skipped, cancelled...)."""
        self.final.add(node)

    def needed(self, producer: str, artifact: str) -> bool:
        """Whether the producer's current volume for `artifact` may still be used."""
        if producer not in self.final:
            return True
        return not self.consumers.get((producer, artifact), set()) <= self.final


def certain_peak(node: PlannedNode, cap: int) -> int:
    """What a node holds at once when it runs as planned: its own volumes and its inputs'
    (a consumer's inputs are all held while it runs)."""
    inputs = {(i.producer, i.name) for i in node.inputs}
    return (len(node.artifacts) + len(inputs)) * cap
