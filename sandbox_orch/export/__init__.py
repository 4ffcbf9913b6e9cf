"""Exporting an admitted workflow to another engine: `sandbox-orch export --to argo`.

- argo.py: the Argo Workflow (a DAG template; each node's template carries its Job's pod
  from backend/kubernetes), and what is refused because only sandbox-orch's runner does it;
- argo_refusals.py: what only sandbox-orch's runner does, refused with the reason;
- argo_depends.py: needs and `when` (CEL, walked as a tree) as Argo's `depends`, exactly.
"""
