"""Kubernetes: the manifests a run's nodes are created from (pure), and the backend.

- manifests.py: a run's manifests from what `plan` admits;
- job.py: a node's attempt as a Job; security.py: its pods' hardening;
- volumes.py, env.py: its memory emptyDirs, its environment (secrets by reference);
- network.py: the run's NetworkPolicies; labels.py, names.py, quantities.py: legal
  labels, names and quantities; settings.py: what the operator maps (runtime classes,
  images); restricted.py: a checker for the Pod Security "restricted" profile.

The backend (imported only by `--backend kubernetes`: it loads the official client):
- backend.py: KubernetesBackend; client.py: the API calls (kubernetes.aio, JSON dicts);
- podexec.py: a command in a pod over the exec API's websocket (run_in, export);
- pods.py, readback.py, checks.py: pure readings of pods, stored objects, namespaces;
- opening.py: connect and check before a run (refusals exit 3), doctor's report.
- podwatch.py: a run's pods as one watch keeps them (what waits wait on, not polls).
"""

from .job import NodeAttempt, node_job
from .manifests import run_manifests
from .settings import ClusterSettings, ManifestError

__all__ = ["ClusterSettings", "ManifestError", "NodeAttempt", "node_job", "run_manifests"]
