"""The policy file's JSON Schema, converted from the cerberus SCHEMA the loader validates
with (policy.py, brokerpolicy.py) by fromcerberus.py.

The checks the schema calls (`check_with`) are parsers; CHECKS says, for each one, what
it accepts in JSON Schema terms (values.py; the budget's from its pydantic model). A
check missing here makes the conversion fail, so a new one cannot go unnoticed.
"""

from __future__ import annotations

from typing import Any

from .. import brokerpolicy, policy
from ..agents.budgets import Budget
from ..bounded.limits import MAX_PROMPT_BYTES
from ..containerpaths import normalise
from ..egress.grants import Grant
from ..units import parse_count, parse_cpus, parse_duration, parse_size
from . import tidy, values
from .fromcerberus import Checks, convert_schema
from .workflow import _LoaderSchema

DESCRIPTION = (
    "The operator's policy: what nodes may be granted (runtimes, images, isolation, egress,"
    " mounts, secrets, limits). Chosen by the operator, never by a workflow; anything not"
    " granted is refused."
)


# Headers that frame the request never carry a secret, in any case.
_FRAMING = "|".join(values.any_case(name) for name in brokerpolicy.NOT_A_SECRET_HEADER)


def checks() -> Checks:
    """What each check_with parser of the policy schema accepts."""
    return {
        policy._version: {"const": 1},
        parse_size: values.SIZE,
        policy._prompt_size: values.bounded_size(MAX_PROMPT_BYTES),
        parse_duration: values.DURATION,
        parse_cpus: values.CPUS,
        parse_count: values.count(),
        Grant.of: values.GRANT,
        normalise: values.CONTAINER_PATH,
        policy._budget: Budget.model_json_schema(schema_generator=_LoaderSchema),
        brokerpolicy.check_upstream: {
            "type": "string",
            # urlsplit strips C0 characters and spaces in front, takes the scheme in any case
            "pattern": r"^[\x00-\x20]*[Hh][Tt][Tt][Pp][Ss]://(?:[^/?#@:\[\]]+|\[[^/?#@\]]+\])(?::[0-9]*)?$",
            "examples": ["https://api.anthropic.com"],
        },
        brokerpolicy.check_header: {
            "type": "string",
            "pattern": f"^{brokerpolicy.HEADER_NAME.pattern}$",
            "not": {"pattern": f"^(?:{_FRAMING})$"},
        },
        brokerpolicy.check_scheme: {"const": "Bearer"},
        brokerpolicy.check_path: {"type": "string", "pattern": r"^/[^\s\x00-\x1f\x7f]*$"},
        brokerpolicy.check_method: {"enum": list(brokerpolicy.METHODS)},
        brokerpolicy.check_env_name: values.ENV_NAME,
    }


def policy_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a policy file."""
    schema = convert_schema(policy.SCHEMA, checks())
    return tidy.finished({"description": DESCRIPTION, **schema}, "policy")
