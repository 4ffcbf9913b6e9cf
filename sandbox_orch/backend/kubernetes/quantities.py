"""Kubernetes resource quantities: what we write (`500m`, `512Mi`) and what is legal.

Exact, never rounded up or down: a limit in a manifest is the policy's limit, to the byte
and the millicore, so the cluster enforces what admission granted.
"""

from __future__ import annotations

import re

# The API's own grammar (k8s.io/apimachinery resource.Quantity): a signed decimal
# number, then a binary suffix, a decimal suffix or a decimal exponent.
QUANTITY = re.compile(
    r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?$"
)
_BINARY = (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024))


def is_quantity(value: object) -> bool:
    return isinstance(value, str) and QUANTITY.match(value) is not None


def cpu_quantity(cpus: float) -> str:
    """CPUs as millicores (`1500m`), the API's finest unit; a whole number stays whole."""
    millis = round(cpus * 1000)
    if millis <= 0:
        raise ValueError(f"{cpus} CPUs is less than one millicore")
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def byte_quantity(size: int) -> str:
    """Bytes in the largest binary unit that divides them exactly (`512Mi`), else bytes."""
    if size <= 0:
        raise ValueError(f"{size} bytes is not a size")
    for suffix, factor in _BINARY:
        if size % factor == 0:
            return f"{size // factor}{suffix}"
    return str(size)
