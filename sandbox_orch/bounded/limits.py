"""The documented limits on evaluating untrusted patterns, conditions, outputs and schemas
(README: Parsers, Conditions). One place, so the docs and the code cannot drift apart."""

from __future__ import annotations

# Wall-clock time one evaluation (one node's output parsed and checked against its schema,
# or one `when`) may take in the worker before the worker is killed and replaced.
EVALUATION_SECONDS = 10.0
# How long a new worker may take to start (imports), not counted in any deadline.
WORKER_START_SECONDS = 60.0

# The worker's address space: a fixed base (the interpreter and its libraries are about
# 60 MiB) plus a multiple of the largest output the policy lets a node print. Parsing
# 16 MiB of `[{}, {}, ...]` needs about 450 MiB; converting it to CEL values more.
WORKER_BASE_MEMORY = 1024**3
WORKER_MEMORY_PER_OUTPUT_BYTE = 64

# JSON values (parsed outputs, schemas): at most this many nested arrays/objects.
MAX_JSON_DEPTH = 64
# Schemas: at most this many subschemas applied to one value through allOf/anyOf/oneOf/
# not/if/then/else/dependentSchemas/$ref (a chain of definitions that each apply the next
# twice would otherwise cost 2^n).
MAX_SCHEMA_EXPANSION = 10_000

# Regular expressions (parser patterns, schema `pattern`s): RE2 syntax, at most this long,
# and RE2's own bound on the compiled program's memory.
MAX_PATTERN_LENGTH = 4096
PATTERN_MEMORY = 8 * 1024**2

# Conditions: checked when the workflow is validated.
MAX_CONDITION_LENGTH = 4096  # characters
MAX_CONDITION_DEPTH = 200  # levels of the parse tree (a parenthesis is 10, `a + b` 2)
MAX_MACROS = 8  # all/exists/exists_one/map/filter calls in one condition
MAX_MACRO_NESTING = 2  # a macro inside the body of a macro inside the body of a macro: no
MAX_LITERAL_ITERATIONS = 10_000  # nested macros over literal lists: product of their sizes


def worker_memory(output_limit: int) -> int:
    """RLIMIT_AS for a run's worker, given the largest output limit of its nodes."""
    return WORKER_BASE_MEMORY + WORKER_MEMORY_PER_OUTPUT_BYTE * output_limit


# Prompts built from earlier results (README: Prompts from earlier results): at most this
# many `${{ ... }}` expressions in one prompt, each bounded as a condition is; the prompt
# as launched is at most the policy's `limits.prompt` bytes (default below), which can
# never exceed MAX_PROMPT_BYTES: Linux refuses a single program argument of 128 KiB or
# more (MAX_ARG_STRLEN), and the prompt is one argument of the agent's command line.
MAX_PROMPT_EXPRESSIONS = 16
DEFAULT_PROMPT_BYTES = 64 * 1024
MAX_PROMPT_BYTES = 120 * 1024
