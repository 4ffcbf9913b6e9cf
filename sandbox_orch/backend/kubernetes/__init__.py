"""Kubernetes: the manifests a run's nodes would be created from (pure, no client yet).

- manifests.py: a run's manifests from what `plan` admits;
- job.py: a node's attempt as a Job; security.py: its pods' hardening;
- volumes.py, env.py: its memory emptyDirs, its environment (secrets by reference);
- network.py: the run's NetworkPolicies; labels.py, names.py, quantities.py: legal
  labels, names and quantities; settings.py: what the operator maps (runtime classes,
  images); restricted.py: a checker for the Pod Security "restricted" profile.
"""

from .job import NodeAttempt, node_job
from .manifests import run_manifests
from .settings import ClusterSettings, ManifestError

__all__ = ["ClusterSettings", "ManifestError", "NodeAttempt", "node_job", "run_manifests"]
