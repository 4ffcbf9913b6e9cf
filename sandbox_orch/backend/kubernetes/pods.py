"""What a node's pod says about its container: pure readings of a Pod object (a dict).

The node's container is the one named CONTAINER (job.py). Its `state` is `waiting`,
`running` or `terminated` (with the exit code, and `reason: OOMKilled` when the kernel's
OOM killer ended it); the pod's phase alone cannot tell an OOM kill from an exit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..base import ExitStatus
from .job import CONTAINER

JOB_NAME_LABEL = "job-name"  # what the Job controller labels its pods with
OOM_REASON = "OOMKilled"
KILLED_EXIT = 137  # 128 + SIGKILL: what Docker reports for a killed container


def job_pods(pods: list[dict[str, Any]], job: str) -> list[dict[str, Any]]:
    """The pods of `job`, checked here too: a selector is the server's filter, not ours."""
    return [
        p
        for p in pods
        if ((p.get("metadata") or {}).get("labels") or {}).get(JOB_NAME_LABEL) == job
    ]


def _state(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == CONTAINER:
            return status.get("state") or {}
    return {}


def has_output(pod: Mapping[str, Any]) -> bool:
    """Its container has started (running, or already ended): its log can be read."""
    state = _state(pod)
    return "running" in state or "terminated" in state


def exit_status(pod: Mapping[str, Any]) -> ExitStatus | None:
    """How its container ended, or None while it has not."""
    terminated = _state(pod).get("terminated")
    if terminated is None:
        phase = (pod.get("status") or {}).get("phase")
        if phase == "Failed":  # ended before its container ran (evicted, deadline)
            reason = (pod.get("status") or {}).get("reason")
            return ExitStatus(KILLED_EXIT, oom_killed=reason == OOM_REASON)
        return None
    code = terminated.get("exitCode")
    if not isinstance(code, int) or isinstance(code, bool):
        code = KILLED_EXIT
    return ExitStatus(code, oom_killed=terminated.get("reason") == OOM_REASON)
