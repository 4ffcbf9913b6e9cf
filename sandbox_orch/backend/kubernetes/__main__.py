"""Print a run's manifests, to read them (a debugging aid; nothing is created):

  python -m sandbox_orch.backend.kubernetes WORKFLOW [--policy P] --namespace NS \\
      --runtime-class runc= --runtime-class runsc=gvisor \\
      --image sandbox-orch/shell=REGISTRY/sandbox-orch/shell@sha256:...

Refused input exits 2 (as `plan`), what the cluster settings cannot express exits 3.

  python -m sandbox_orch.backend.kubernetes --seccomp-profile

prints the seccomp profile gVisor pods name (its path under the kubelet's seccomp
directory on stderr, the file's content on stdout), for the operator to install.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from ...errors import InputRefused
from ...policy import choose_policy_path
from ...preparing import prepare
from ...seccomp import RUNSC_LOCALHOST_PROFILE, RUNSC_PROFILE
from ...store import new_run_id
from .job import NodeAttempt
from .manifests import run_manifests
from .settings import ClusterSettings, ManifestError

PROXY_PLACEHOLDER = "EGRESS-PROXY-POD-IP:3128"  # known only once the proxy pod runs


def _pairs(values: list[str], what: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, mapped = value.partition("=")
        if not sep or not key:
            raise SystemExit(f"{what} {value!r}: expected NAME=VALUE")
        pairs[key] = mapped
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox_orch.backend.kubernetes")
    if argv is None:
        argv = sys.argv[1:]
    if argv == ["--seccomp-profile"]:
        print(f"/var/lib/kubelet/seccomp/{RUNSC_LOCALHOST_PROFILE}", file=sys.stderr)
        print(RUNSC_PROFILE)
        return 0
    parser.add_argument("workflow", type=Path)
    parser.add_argument("--policy")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--runtime-class", action="append", default=[], metavar="OCI=CLASS")
    parser.add_argument("--image", action="append", default=[], metavar="NAME=REF@sha256:...")
    args = parser.parse_args(argv)
    classes = _pairs(args.runtime_class, "--runtime-class")
    settings = ClusterSettings(
        namespace=args.namespace,
        runtime_classes={oci: name or None for oci, name in classes.items()},
        images=_pairs(args.image, "--image"),
    )
    try:
        prepared = prepare(args.workflow, choose_policy_path(args.policy))
        attempt = NodeAttempt(new_run_id(), "preview:0:0", 1, PROXY_PLACEHOLDER)
        manifests = run_manifests(prepared.plan, prepared.sandboxes, attempt, settings)
    except InputRefused as refused:
        print(refused, file=sys.stderr)
        return 2
    except ManifestError as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    print(yaml.safe_dump_all(manifests, sort_keys=False), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
