"""Rules on what agent nodes may set and spend (the policy's `agents:` section): bypassed
permission checks, no spend ceiling, tools never ruled out, any model (SO801-SO804).
Only when the policy grants an agent runtime: elsewhere the section governs nothing."""

from __future__ import annotations

import fnmatch

from ..yamlsafe import Loc
from .checking import AGENT_RUNTIMES, _Review


def _check_agents(r: _Review) -> None:
    granted = [i for i, n in enumerate(r.data.get("runtimes") or ()) if n in AGENT_RUNTIMES]
    if not granted:
        return
    rules = r.policy.agents
    fallback: Loc = ("agents",) if r.has(("agents",)) else ("runtimes", granted[0])

    def where(key: str) -> Loc:
        return ("agents", key) if r.has(("agents", key)) else fallback

    modes = rules.permission_modes
    if modes is None:
        r.add("SO801", fallback, "any permission mode, bypassPermissions included")
    elif "bypassPermissions" in modes:
        loc = ("agents", "permission_modes", modes.index("bypassPermissions"))
        r.add("SO801", loc, "permission mode bypassPermissions is allowed")
    ceiling = rules.budget.limits() if rules.budget else {}
    blocking = [m for m in ("usd", "tokens") if m in ceiling and ceiling[m].mode == "block"]
    if not blocking:
        title = "the spend ceiling only warns" if ceiling else "no spend ceiling for agent runs"
        r.add("SO802", where("budget"), title)
    tools = rules.never_allow_tools
    if not tools:
        r.add("SO803", where("never_allow_tools"), "no tool is ruled out of allowed_tools")
    elif not any(fnmatch.fnmatchcase("bash", pattern.lower()) for pattern in tools):
        r.add("SO803", where("never_allow_tools"), "nodes may pre-approve Bash (any command)")
    if rules.models is None:
        r.add("SO804", fallback, "workflows may choose any model")
