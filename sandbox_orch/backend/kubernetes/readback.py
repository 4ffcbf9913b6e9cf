"""What the API server stored, compared with what we asked: the cluster's read-back.

As backend/readback.py does for Docker: an admission webhook, a mutating policy or an
old API server can drop or change a field we set (a security context, a limit, the
runtime class) without refusing the object. Everything we asked for must be there as we
asked it; fields the server adds (defaults, its own metadata) are not our concern, and
none of ours is ever removed by design. Differences are named by path, never by value
(a value may be a secret's reference or an environment value).
"""

from __future__ import annotations

from typing import Any

# Job fields we set that the server changes by design: `suspend` is released by `start`.
RELEASED = {"spec.suspend"}


def differing(asked: Any, got: Any, path: str = "") -> list[str]:
    """The paths of `asked` that `got` lacks or holds differently."""
    if path in RELEASED:
        return []
    if isinstance(asked, dict):
        if not isinstance(got, dict):
            return [path or "."]
        found: list[str] = []
        for key, value in asked.items():
            where = f"{path}.{key}" if path else str(key)
            found += [where] if key not in got else differing(value, got[key], where)
        return found
    if isinstance(asked, list):
        if not isinstance(got, list) or len(got) != len(asked):
            return [path]
        found = []
        for index, (a, g) in enumerate(zip(asked, got, strict=True)):
            found += differing(a, g, f"{path}[{index}]")
        return found
    return [] if asked == got and type(asked) is type(got) else [path]


def job_differs(asked: dict[str, Any], created: dict[str, Any]) -> list[str]:
    """Where the created Job's spec (its pod template included) is not the asked one."""
    return differing(asked["spec"], created.get("spec"), "spec")


def pod_differs(template: dict[str, Any], pod: dict[str, Any]) -> list[str]:
    """Where the running pod's spec is not its template's (a webhook on pods)."""
    return differing(template["spec"], pod.get("spec"), "pod.spec")
