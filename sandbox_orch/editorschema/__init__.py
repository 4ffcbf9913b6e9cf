"""JSON Schemas of the workflow and policy file formats, for editors
(`sandbox-orch schema workflow|policy`).

Derived from the definitions the loaders validate against, never written twice: the
workflow's from its pydantic models (workflow.py), the policy's converted from its
cerberus schema (policy.py). Light on purpose: workflow.py imports `values` from here.
"""
