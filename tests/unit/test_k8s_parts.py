"""The manifest builder's parts: names, labels, quantities, the operator's mappings, the
restricted checker (each rule broken once), artifacts, egress and secrets."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import kubernetes_validate
import pytest

from sandbox_orch.backend.kubernetes import ManifestError, NodeAttempt, node_job, restricted
from sandbox_orch.backend.kubernetes.job import COPY_GRACE, DEADLINE_GRACE
from sandbox_orch.backend.kubernetes.labels import label_value, legal_label_key, legal_label_value
from sandbox_orch.backend.kubernetes.names import job_name, legal_name
from sandbox_orch.backend.kubernetes.network import run_network_policies
from sandbox_orch.backend.kubernetes.quantities import byte_quantity, cpu_quantity, is_quantity
from sandbox_orch.backend.kubernetes.security import uid_gid
from sandbox_orch.backend.kubernetes.settings import ClusterSettings
from sandbox_orch.policy import load_policy

from .helpers import admitted, default_policy
from .k8s_cases import ATTEMPT, SETTINGS

# --- quantities -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpus", "expected"), [(1, "1"), (2.0, "2"), (0.5, "500m"), (1.5, "1500m"), (0.001, "1m")]
)
def test_cpu_quantities_are_exact_millicores(cpus, expected):
    assert cpu_quantity(cpus) == expected


@pytest.mark.parametrize(
    ("size", "expected"),
    [(512 * 1024**2, "512Mi"), (1024**3, "1Gi"), (3 * 1024, "3Ki"), (1000, "1000"), (2**40, "1Ti")],
)
def test_byte_quantities_are_exact(size, expected):
    assert byte_quantity(size) == expected


@pytest.mark.parametrize("bad", [0, -1])
def test_no_quantity_for_nothing(bad):
    with pytest.raises(ValueError):
        byte_quantity(bad)
    with pytest.raises(ValueError):
        cpu_quantity(bad / 10000)


@pytest.mark.parametrize("good", ["1", "500m", "64Mi", "1.5", "1e3", ".5Gi"])
def test_quantity_syntax_accepts(good):
    assert is_quantity(good)


@pytest.mark.parametrize("bad", ["", "1 Gi", "1GB", "Mi", "1.5.0", "ten", 5])
def test_quantity_syntax_refuses(bad):
    assert not is_quantity(bad)


# --- labels and names -------------------------------------------------------------------


def test_label_values_that_are_legal_stay_others_are_hashed_unambiguously():
    assert label_value("20261125t003400-1a2b3c") == "20261125t003400-1a2b3c"
    assert label_value("build_2") == "build_2"
    for illegal in ("host:12:345", "ends-", "ends_", "x" * 64):
        hashed = label_value(illegal)
        assert hashed.startswith("h.") and legal_label_value(hashed)
        assert label_value(illegal + "!") != hashed
    assert legal_label_value("") and legal_label_value("a" * 63)
    assert not legal_label_value("a" * 64) and not legal_label_value("-a")


@pytest.mark.parametrize("key", ["sandbox-orch.run", "example.com/run", "a", "app_name"])
def test_legal_label_keys(key):
    assert legal_label_key(key)


@pytest.mark.parametrize("key", ["", "Example.com/run", "/run", "a/b/c", "x" * 64, "run:x"])
def test_illegal_label_keys(key):
    assert not legal_label_key(key)


@pytest.mark.parametrize("node", ["build", "build_2", "ends-", "a" * 63, "x_" * 31 + "x"])
def test_job_names_are_legal_and_unique(node):
    name = job_name("20261125t003400-1a2b3c", node, 12)
    assert legal_name(name) and name.endswith("-12")
    assert name != job_name("20261125t003400-1a2b3c", node + "y", 12)
    assert job_name("20261125t003400-1a2b3c", "build", 1) == (
        "sandbox-orch-20261125t003400-1a2b3c-build-1"
    )


@pytest.mark.parametrize("namespace", ["default", "Bad_NS", ""])
def test_nodes_never_go_to_the_default_namespace_or_an_illegal_one(namespace):
    settings = dataclasses.replace(SETTINGS, namespace=namespace)
    with pytest.raises(ManifestError, match="is not one to run nodes in"):
        _job(settings=settings)


def test_a_run_id_that_cannot_be_in_a_name_is_refused():
    with pytest.raises(ValueError, match="run id"):
        job_name("Run:1", "build", 1)


# --- the operator's mappings -------------------------------------------------------------

HELLO = """
version: 1
name: t
nodes:
  a: {command: ["true"]}
"""


def _job(text=HELLO, policy=None, settings=SETTINGS, at=ATTEMPT, node="a"):
    plan, sandboxes = admitted(text, policy)
    return node_job(plan.nodes[node], sandboxes[node], at, settings)


def test_an_unmapped_runtime_is_an_error_never_dropped():
    settings = ClusterSettings(
        namespace="ns", runtime_classes={"runsc": "gvisor"}, images=SETTINGS.images
    )
    with pytest.raises(ManifestError, match="OCI runtime 'runc' has no RuntimeClass"):
        _job(settings=settings)


def test_a_mapped_runtime_names_its_runtime_class():
    settings = ClusterSettings(
        namespace="ns", runtime_classes={"runc": "runc-hardened"}, images=SETTINGS.images
    )
    assert _job(settings=settings)["spec"]["template"]["spec"]["runtimeClassName"] == (
        "runc-hardened"
    )


def test_an_image_without_a_pinned_reference_is_refused():
    unpinned = ClusterSettings(
        namespace="ns",
        runtime_classes=SETTINGS.runtime_classes,
        images={"sandbox-orch/shell": "reg/shell:1"},
    )
    with pytest.raises(ManifestError, match="not pinned by digest"):
        _job(settings=unpinned)
    with pytest.raises(ManifestError, match="no pinned reference"):
        _job(settings=ClusterSettings(namespace="ns", runtime_classes=SETTINGS.runtime_classes))


def test_the_job_runs_once_with_a_deadline_and_the_node_limits():
    job = _job(
        """
        version: 1
        name: t
        nodes:
          a: {command: ["true"], timeout: 90s,
              resources: {cpus: 0.5, memory: 256m, pids: 64}}
        """
    )
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert spec["backoffLimit"] == 0 and pod["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] == 90 + DEADLINE_GRACE
    assert spec["ttlSecondsAfterFinished"] == SETTINGS.ttl_after_finished
    container = pod["containers"][0]
    amounts = {"cpu": "500m", "memory": "256Mi", "ephemeral-storage": "64Mi"}
    assert container["resources"] == {"requests": amounts, "limits": amounts}
    # tini is PID 1 (a Pod has no init); runc: no RLIMIT_NPROC (it would count the uid's
    # processes on the whole node)
    assert container["command"] == [
        "/usr/bin/tini", "--", "prlimit", "--nofile=1024", "--core=0", "--", "true"
    ]  # fmt: skip
    assert job["metadata"]["annotations"]["sandbox-orch.pids"] == "64"
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["fsGroup"] == 10001


def test_under_gvisor_rlimit_nproc_carries_the_pids_limit():
    policy = load_policy(Path(__file__).resolve().parents[2] / "policies" / "ci.yaml")
    job = _job(HELLO.replace('"true"]', '"true"], resources: {pids: 100}'), policy=policy)
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[2:7] == ["prlimit", "--nofile=1024", "--core=0", "--nproc=100", "--"]


def test_runc_pods_get_their_own_user_namespace_gvisor_pods_cannot():
    policy = load_policy(Path(__file__).resolve().parents[2] / "policies" / "ci.yaml")
    runc = _job()["spec"]["template"]["spec"]
    gvisor = _job(policy=policy)["spec"]["template"]["spec"]
    assert runc["hostUsers"] is False
    assert gvisor["runtimeClassName"] == "gvisor" and gvisor["hostUsers"] is True
    older = dataclasses.replace(SETTINGS, user_namespaces=False)  # said by the operator
    assert _job(settings=older)["spec"]["template"]["spec"]["hostUsers"] is True


# --- artifacts, egress, secrets ----------------------------------------------------------

DAG = """
version: 1
name: t
nodes:
  make:
    runtime: shell
    command: "true"
    outputs: {artifacts: [{name: dist, path: /out}]}
  use_:
    needs: [make]
    runtime: shell
    command: "true"
    inputs: [{from: make/dist, path: /in}]
"""


def test_artifacts_are_memory_volumes_rw_in_the_producer_ro_in_the_consumer():
    producer, consumer = _job(DAG, node="make"), _job(DAG, node="use_")
    pod = producer["spec"]["template"]["spec"]
    assert {"name": "artifact-0", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}} in (
        pod["volumes"]
    )
    assert {"name": "artifact-0", "mountPath": "/out", "readOnly": False} in (
        pod["containers"][0]["volumeMounts"]
    )
    assert "initContainers" not in pod
    pod = consumer["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["node"]  # holds no artifact
    assert {"name": "input-0", "mountPath": "/in", "readOnly": True} in (
        pod["containers"][0]["volumeMounts"]
    )
    (deliver,) = pod["initContainers"]
    assert {"name": "input-0", "mountPath": "/in", "readOnly": False} in deliver["volumeMounts"]
    # held on its own gate (no stdin: no attach needed), which the node never mounts
    assert deliver["command"][-1] == "/gate/go" and not deliver["stdin"]
    assert {"name": "gate", "mountPath": "/gate", "readOnly": False} in deliver["volumeMounts"]
    assert "gate" not in [m["name"] for m in pod["containers"][0]["volumeMounts"]]
    assert {"name": "gate", "emptyDir": {"medium": "Memory", "sizeLimit": "64Ki"}} in (
        pod["volumes"]
    )
    assert restricted.violations(pod) == []
    # a node name that is no legal label value: hashed label, the name in an annotation
    metadata = consumer["metadata"]
    assert metadata["labels"]["sandbox-orch.node"] == label_value("use_") != "use_"
    assert metadata["annotations"]["sandbox-orch.node"] == "use_"
    for version in ("1.33.0", "1.37.0"):
        kubernetes_validate.validate(consumer, version, strict=True)


def test_a_producers_pod_has_a_holder_that_keeps_its_artifacts_for_the_copy():
    producer, consumer = _job(DAG, node="make"), _job(DAG, node="use_")
    pod = producer["spec"]["template"]["spec"]
    node, holder = pod["containers"]
    assert holder["name"] == "holder" and holder["image"] == SETTINGS.images["sandbox-orch/base"]
    assert (
        holder["command"][-2:] == ["sleep", "infinity"] and holder["command"][0] == "/usr/bin/tini"
    )
    # the artifact read-only, where the artifacts' commands look (HOLDER_ROOT/name)
    assert holder["volumeMounts"] == [
        {"name": "artifact-0", "mountPath": "/held/dist", "readOnly": True}
    ]
    assert holder["securityContext"] == node["securityContext"]
    amounts = holder["resources"]["limits"]
    assert holder["resources"]["requests"] == amounts  # the pod stays "Guaranteed"
    assert (amounts["cpu"], amounts["memory"]) == ("250m", "64Mi")
    assert not holder["stdin"] and not holder["tty"]
    assert restricted.violations(pod) == []
    # the copy has its time after the node's: only a producer's Job waits for one
    deadlines = [job["spec"]["activeDeadlineSeconds"] for job in (producer, consumer)]
    assert deadlines[0] - deadlines[1] == COPY_GRACE
    for version in ("1.33.0", "1.37.0"):
        kubernetes_validate.validate(producer, version, strict=True)


def _egress_policy(tmp_path):
    text = (Path(__file__).resolve().parents[2] / "policies" / "default.yaml").read_text()
    text = text.replace("egress: []", 'egress: ["pypi.org:443"]')
    text += (
        "\n"
        + 'secrets:\n  TOKEN: {from_env: K8S_TEST_TOKEN, runtimes: [shell, custom], egress: ["pypi.org:443"]}\n'
    )
    text = text.replace("secrets: {}\n", "")
    path = tmp_path / "egress.yaml"
    path.write_text(text)
    return load_policy(path)


EGRESS = """
version: 1
name: t
nodes:
  a: {command: ["true"], network: {egress: ["pypi.org:443"]}, secrets: [TOKEN]}
  b: {command: ["true"]}
"""


def test_egress_goes_through_the_proxy_and_secrets_by_reference(tmp_path, monkeypatch):
    monkeypatch.setenv("K8S_TEST_TOKEN", "k8s-test-token-VALUE-9z8y")
    policy = _egress_policy(tmp_path)
    job, plain = _job(EGRESS, policy=policy), _job(EGRESS, policy=policy, node="b")
    assert "k8s-test-token-VALUE-9z8y" not in json.dumps([job, plain])
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["TOKEN"] == {
        "secretKeyRef": {
            "name": f"{job['metadata']['name']}-env",
            "key": "TOKEN",
            "optional": False,
        }
    }
    assert env["HTTPS_PROXY"] == "http://127.0.0.1:3128"
    assert env["SANDBOX_ORCH_EGRESS_PROXY"] == "192.0.2.10:3128"
    assert container["command"][5:] == ["--", "sandbox-orch-egress", "true"]
    assert job["metadata"]["labels"]["sandbox-orch.egress"] == "proxy"
    assert "sandbox-orch.egress" not in plain["metadata"]["labels"]
    no_proxy = NodeAttempt(ATTEMPT.run_id, ATTEMPT.owner)
    with pytest.raises(ValueError, match="egress-proxy address"):
        _job(EGRESS, policy=policy, at=no_proxy)


@pytest.mark.parametrize("name", ["1X", "A B", "A:B"])
def test_an_environment_name_the_api_refuses_is_refused_here(name):
    workflow = f'version: 1\nname: t\nnodes:\n  a: {{command: ["true"], env: {{"{name}": v}}}}\n'
    with pytest.raises(ManifestError, match=f"environment name '{name}' is not one"):
        _job(workflow)


def test_environment_names_with_dots_and_dashes_pass():
    workflow = 'version: 1\nname: t\nnodes:\n  a: {command: ["true"], env: {A.b-c_D: v}}\n'
    (container,) = _job(workflow)["spec"]["template"]["spec"]["containers"]
    assert {"name": "A.b-c_D", "value": "v"} in container["env"]


@pytest.mark.parametrize(
    ("user", "ok"), [("10001:10002", (10001, 10002)), ("0:5", None), ("a:b", None), ("5", None)]
)
def test_the_user_is_numeric_and_never_root(user, ok):
    if ok is None:
        with pytest.raises(ValueError):
            uid_gid(user)
    else:
        assert uid_gid(user) == ok


def test_network_policies_deny_all_but_the_proxy_for_egress_pods():
    deny, to_proxy, proxy = run_network_policies("r1", "h:1:2", "ns", 3128)
    assert deny["spec"]["podSelector"]["matchLabels"] == {
        "sandbox-orch.run": "r1",
        "sandbox-orch.role": "node",
    }
    assert deny["spec"]["ingress"] == deny["spec"]["egress"] == []
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert to_proxy["spec"]["podSelector"]["matchLabels"]["sandbox-orch.egress"] == "proxy"
    (rule,) = to_proxy["spec"]["egress"]
    assert rule == {
        "to": [
            {
                "podSelector": {
                    "matchLabels": {"sandbox-orch.run": "r1", "sandbox-orch.role": "egress-proxy"}
                }
            }
        ],
        "ports": [{"protocol": "TCP", "port": 3128}],
    }
    assert to_proxy["spec"]["ingress"] == []
    # The proxy pod: in, only from the run's egress nodes on its port; out, anywhere (its
    # own allowlists decide, and it needs the cluster's DNS).
    assert proxy["spec"]["podSelector"]["matchLabels"] == {
        "sandbox-orch.run": "r1", "sandbox-orch.role": "egress-proxy"
    }  # fmt: skip
    (inward,) = proxy["spec"]["ingress"]
    assert inward == {
        "from": [{"podSelector": {"matchLabels": {
            "sandbox-orch.run": "r1", "sandbox-orch.role": "node", "sandbox-orch.egress": "proxy"
        }}}],
        "ports": [{"protocol": "TCP", "port": 3128}],
    }  # fmt: skip
    assert proxy["spec"]["egress"] == [{}]
    assert set(proxy["spec"]["policyTypes"]) == {"Ingress", "Egress"}


# --- the restricted checker, each rule broken once ---------------------------------------


@pytest.fixture(scope="module")
def good_pod():
    plan, sandboxes = admitted(DAG, default_policy())
    job = node_job(plan.nodes["use_"], sandboxes["use_"], ATTEMPT, SETTINGS)
    return job["spec"]["template"]["spec"]


def _set(path: str, value):
    def apply(pod):
        *parents, last = path.split(".")
        target = pod
        for part in parents:
            target = target[int(part)] if part.isdigit() else target.setdefault(part, {})
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value

    return apply


_DELETE = object()
NODE_SC = "containers.0.securityContext"
INIT_SC = "initContainers.0.securityContext"
BREAKS = {
    "hostNetwork": _set("hostNetwork", True),
    "hostPID": _set("hostPID", True),
    "hostIPC": _set("hostIPC", True),
    "hostPath volume": lambda pod: pod["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
    "unsafe sysctl": _set("securityContext.sysctls", [{"name": "kernel.msgmax", "value": "1"}]),
    "pod root": _set("securityContext.runAsUser", 0),
    "pod runAsNonRoot false": _set("securityContext.runAsNonRoot", False),
    "pod seccomp unconfined": _set("securityContext.seccompProfile", {"type": "Unconfined"}),
    "pod selinux user": _set("securityContext.seLinuxOptions", {"user": "system_u"}),
    "pod apparmor unconfined": _set("securityContext.appArmorProfile", {"type": "Unconfined"}),
    "pod hostProcess": _set("securityContext.windowsOptions", {"hostProcess": True}),
    "token mounted": _set("automountServiceAccountToken", True),
    "service links": _set("enableServiceLinks", _DELETE),
    "shared processes": _set("shareProcessNamespace", True),
    "privileged": _set(f"{NODE_SC}.privileged", True),
    "escalation": _set(f"{NODE_SC}.allowPrivilegeEscalation", True),
    "escalation unset": _set(f"{NODE_SC}.allowPrivilegeEscalation", _DELETE),
    "container root": _set(f"{NODE_SC}.runAsUser", 0),
    "capabilities kept": _set(f"{NODE_SC}.capabilities", {"drop": ["NET_RAW"]}),
    "capability added": _set(f"{NODE_SC}.capabilities", {"drop": ["ALL"], "add": ["SYS_ADMIN"]}),
    "procMount": _set(f"{NODE_SC}.procMount", "Unmasked"),
    "writable root": _set(f"{NODE_SC}.readOnlyRootFilesystem", False),
    "container hostProcess": _set(f"{NODE_SC}.windowsOptions", {"hostProcess": True}),
    "hostPort": _set("containers.0.ports", [{"containerPort": 80, "hostPort": 80}]),
    "init privileged": _set(f"{INIT_SC}.privileged", True),
}


def _no_non_root(pod):
    del pod["securityContext"]["runAsNonRoot"]
    del pod["containers"][0]["securityContext"]["runAsNonRoot"]


def _no_seccomp(pod):
    del pod["securityContext"]["seccompProfile"]
    del pod["containers"][0]["securityContext"]["seccompProfile"]


BREAKS["runAsNonRoot unset"] = _no_non_root
BREAKS["seccomp unset"] = _no_seccomp


def test_the_good_pod_passes(good_pod):
    assert restricted.violations(good_pod) == []


@pytest.mark.parametrize("rule", sorted(BREAKS))
def test_each_rule_broken_once_is_caught(good_pod, rule):
    pod = copy.deepcopy(good_pod)
    BREAKS[rule](pod)
    assert len(restricted.violations(pod)) == 1, (rule, restricted.violations(pod))


def test_the_allowed_capability_and_a_safe_sysctl_pass(good_pod):
    pod = copy.deepcopy(good_pod)
    pod["containers"][0]["securityContext"]["capabilities"]["add"] = ["NET_BIND_SERVICE"]
    pod["securityContext"]["sysctls"] = [{"name": "net.ipv4.ping_group_range", "value": "0 0"}]
    assert restricted.violations(pod) == []
