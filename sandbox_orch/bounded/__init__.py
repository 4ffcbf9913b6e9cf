"""Bounded evaluation of what a workflow or a node supplies: regular expressions, CEL
conditions, parsed outputs and JSON Schemas.

All of it is untrusted, and all of it used to run on the scheduler's event loop, where a
catastrophic pattern or a nested comprehension froze every timer of the run. Here it is
bounded in three ways:

- statically, when the workflow is validated (RE2 patterns, a cost limit on conditions,
  schemas without self-reference): refused with exit 2 before anything starts;
- by construction (a linear-time regex engine, a nesting limit on JSON values);
- at run time, in one small worker process per run (`Evaluator`), with a deadline per
  evaluation and an address-space limit: an evaluation that overruns is killed with its
  process, and the event loop never waits on it.

Modules: `limits` (the numbers), `patterns` (RE2), `nesting` (JSON depth), `worker` and
`evaluator` (the process and its client), `protocol` (how they talk).
"""
