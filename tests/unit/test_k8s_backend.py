"""KubernetesBackend against kmock's API emulator (see k8s_emulator.py: it proves the
plumbing through the official client, not a cluster's semantics), the scheduler
unchanged on top: every test name says `emulator`."""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import re
import socket
import textwrap
from types import SimpleNamespace

import pytest

from sandbox_orch.backend.base import SettingsDiffer, VolumeMount
from sandbox_orch.backend.kubernetes.backend import KubernetesBackend
from sandbox_orch.backend.kubernetes.opening import describe, open_backend
from sandbox_orch.errors import InfrastructureError
from sandbox_orch.execution import RUN_LABEL
from sandbox_orch.gc import collect_garbage
from sandbox_orch.orchestrator import RunOptions, run_plan
from sandbox_orch.policy import load_policy

from .helpers import admitted
from .k8s_emulator import JOBS, POLICIES, POLICY, SECRETS, SETTINGS, Script, emulated

DEAD_OWNER = f"{socket.gethostname()}:999999999:1"  # this host, no such process
SECRET = "k8s-unit-SECRET-value-9f8e7d"
NODES = {
    "ok": "command: [echo, hi]\n    secrets: [K8S_KEY]",
    "fails": 'command: ["false"]',
    "oom": "command: [x]",
    "slow": 'command: [sleep, "100"]\n    timeout: 1s',
    "after": "needs: [ok]\n    command: [echo, after]",
}


def _workflow(*names: str) -> str:
    nodes = "".join(f"  {name}:\n    {NODES[name]}\n" for name in names)
    return f"version: 1\nname: k8s\ndefaults: {{runtime: shell}}\nnodes:\n{nodes}"


WORKFLOW = _workflow(*NODES)
SCRIPTS = {
    "ok": Script(0, log=b"hi\n"),
    "fails": Script(3, "Error", b"it failed\n"),
    "oom": Script(137, "OOMKilled"),
    "slow": Script(None),
    "after": Script(0, log=b"after\n"),
}


@pytest.fixture
def policy(tmp_path, monkeypatch):
    monkeypatch.setenv("SANDBOX_ORCH_HOME", str(tmp_path / "store"))
    monkeypatch.setenv("SO_UNIT_K8S_KEY", SECRET)

    def make(runtime: str = "runc"):
        path = tmp_path / f"policy-{runtime}.yaml"
        path.write_text(textwrap.dedent(POLICY).replace("RUNTIME", runtime))
        return load_policy(path)

    return make


async def _run(
    policy, workflow, scripts, interrupt_when=None, mutate=None, settings=SETTINGS, resync=None
):
    plan, sandboxes = admitted(textwrap.dedent(workflow), policy)
    async with emulated(scripts) as (emulator, cluster, kubelet):
        kubelet.mutate = mutate
        backend = await open_backend(settings, None, plan, sandboxes, cluster=cluster)
        if resync is not None:
            backend.resync = resync
        interrupt = asyncio.Event()
        if interrupt_when is not None:

            async def watch():
                while not interrupt_when(kubelet):
                    await asyncio.sleep(0.005)
                interrupt.set()

            watcher = asyncio.ensure_future(watch())
        try:
            report = await run_plan(
                plan, policy, sandboxes, backend, "r-k8s-1", lambda e: None, interrupt,
                RunOptions(keep_going=True),
            )  # fmt: skip
        finally:
            await backend.close()
            if interrupt_when is not None:
                watcher.cancel()
        left = {kind: kubelet.live(kind) for kind in (JOBS, SECRETS, POLICIES)}
        return report, left, emulator, kubelet


def test_emulator_runs_a_workflow_success_failure_oom_timeout_and_removes_everything(policy):
    report, left, emulator, kubelet = asyncio.run(_run(policy("runc"), WORKFLOW, SCRIPTS))
    nodes = report.results["nodes"]
    assert nodes["ok"]["status"] == "succeeded" and nodes["ok"]["stdout_tail"] == "hi\n"
    assert nodes["after"]["status"] == "succeeded"
    assert nodes["fails"]["status"] == "failed" and nodes["fails"]["exit_code"] == 3
    assert nodes["fails"]["reason"] == "exited with code 3"
    assert nodes["oom"]["status"] == "failed" and nodes["oom"]["reason"] == "killed: out of memory"
    assert nodes["slow"]["status"] == "timed_out" and nodes["slow"]["exit_code"] == 137
    assert left == {JOBS: {}, SECRETS: {}, POLICIES: {}}
    assert len(kubelet.made) == 5
    # What was created: Jobs with a Secret each, suspended until started; the secret's
    # value is in its Secret only, referenced by name from the Job.
    created = [r.data for r in list(emulator) if r.method == "POST"]
    kinds = [body["kind"] for body in created]
    assert kinds.count("Job") == 5 and kinds.count("Secret") == 5
    assert kinds.count("NetworkPolicy") == 3
    jobs = [b for b in created if b["kind"] == "Job"]
    assert all(job["spec"]["suspend"] is True for job in jobs)
    ok_secret = next(
        b for b in created if b["kind"] == "Secret" and "-ok-" in b["metadata"]["name"]
    )
    assert base64.b64decode(ok_secret["data"]["K8S_KEY"]).decode() == SECRET
    assert all(SECRET not in repr(job) for job in jobs)
    deletes = [r for r in list(emulator) if r.method == "DELETE" and "/jobs/" in str(r.url)]
    assert deletes and all(r.params.get("propagationPolicy") == "Foreground" for r in deletes)


def test_emulator_ctrl_c_removes_jobs_secrets_and_network_policies(policy):
    def started(kubelet):
        return any("-slow-" in name for name in kubelet.made)

    report, left, _, _ = asyncio.run(
        _run(policy("runc"), _workflow("slow"), {"slow": Script(None)}, interrupt_when=started)
    )
    assert report.results["nodes"]["slow"]["status"] == "cancelled"
    assert left == {JOBS: {}, SECRETS: {}, POLICIES: {}}


def test_emulator_pod_changed_by_the_cluster_is_refused_and_removed(policy):
    def drop_hardening(spec):
        spec = copy.deepcopy(spec)
        del spec["containers"][0]["securityContext"]["capabilities"]
        return spec

    report, left, _, _ = asyncio.run(
        _run(policy("runc"), _workflow("fails"), {"fails": Script(0)}, mutate=drop_hardening)
    )
    node = report.results["nodes"]["fails"]
    assert node["status"] == "errored"
    assert node["reason"] == (
        "the cluster changed the pod's pod.spec.containers[0].securityContext.capabilities"
    )
    assert left == {JOBS: {}, SECRETS: {}, POLICIES: {}}


def test_emulator_job_stored_differently_is_refused_at_create(policy):
    plan, sandboxes = admitted(textwrap.dedent(_workflow("fails")), policy("runc"))

    async def scenario():
        async with emulated() as (emulator, cluster, kubelet):

            def weakened(request):
                body = copy.deepcopy(request.data)
                body["spec"]["template"]["spec"]["automountServiceAccountToken"] = True
                return body

            emulator[f"post /apis/batch/v1/namespaces/{SETTINGS.namespace}/jobs"] << weakened
            backend = await open_backend(SETTINGS, None, plan, sandboxes, cluster=cluster)
            report = await run_plan(
                plan, policy("runc"), sandboxes, backend, "r-k8s-2", lambda e: None,
                asyncio.Event(), RunOptions(),
            )  # fmt: skip
            await backend.close()
            return report, kubelet

    report, kubelet = asyncio.run(scenario())
    node = report.results["nodes"]["fails"]
    assert node["status"] == "errored" and kubelet.made == []
    assert node["reason"] == (
        "the cluster changed the Job's spec.template.spec.automountServiceAccountToken"
    )
    assert {k: kubelet.live(k) for k in (JOBS, SECRETS)} == {JOBS: {}, SECRETS: {}}


def test_emulator_gc_finds_and_removes_a_dead_runs_objects_by_label(policy):
    plan, sandboxes = admitted(textwrap.dedent(_workflow("fails")), policy("runc"))

    async def scenario():
        async with emulated() as (_, cluster, kubelet):
            backend = KubernetesBackend(cluster, SETTINGS)
            from sandbox_orch.execution import NodeRunner

            runner = NodeRunner(backend, "r-dead-1", DEAD_OWNER)
            spec = runner.spec(plan.nodes["fails"], sandboxes["fails"], 1)
            await backend.create(spec)  # then its runner died: nothing removed it
            found = await backend.labelled(RUN_LABEL, "r-dead-1")
            report = await collect_garbage(backend)
            rest = {k: kubelet.live(k) for k in (JOBS, SECRETS, POLICIES)}
            await backend.close()
            return found, report, rest

    found, report, rest = asyncio.run(scenario())
    assert sorted(r.id.split("/")[0] for r in found) == [
        "Job",
        "NetworkPolicy",
        "NetworkPolicy",
        "NetworkPolicy",
        "Secret",
    ]
    assert all(r.labels["sandbox-orch.owner"] == DEAD_OWNER for r in found)
    assert len(report.removed) == 5 and report.kept == []
    assert rest == {JOBS: {}, SECRETS: {}, POLICIES: {}}


@pytest.mark.parametrize(
    ("labels", "why"),
    [
        (
            {},
            "namespace 'so-test' does not enforce Pod Security \"restricted\" (no enforce "
            "label); label it pod-security.kubernetes.io/enforce=restricted",
        ),
        (
            {"pod-security.kubernetes.io/enforce": "baseline"},
            "namespace 'so-test' does not enforce Pod Security \"restricted\" (enforces "
            "'baseline'); label it pod-security.kubernetes.io/enforce=restricted",
        ),
    ],
)
def test_emulator_namespace_not_restricted_is_refused(policy, labels, why):
    plan, sandboxes = admitted(textwrap.dedent(_workflow("fails")), policy("runc"))

    async def scenario():
        async with emulated(namespace_labels=labels) as (emulator, cluster, _):
            with pytest.raises(InfrastructureError) as refused:
                await open_backend(SETTINGS, None, plan, sandboxes, cluster=cluster)
            return str(refused.value), [r.method for r in list(emulator)]

    message, methods = asyncio.run(scenario())
    assert message == why
    assert "POST" not in methods  # nothing created


def test_emulator_missing_runtime_class_is_refused_never_downgraded(policy):
    plan, sandboxes = admitted(textwrap.dedent(_workflow("fails")), policy("runsc"))

    async def scenario():
        async with emulated(runtime_classes=()) as (_, cluster, _):
            with pytest.raises(InfrastructureError) as refused:
                await open_backend(SETTINGS, None, plan, sandboxes, cluster=cluster)
            return str(refused.value)

    assert asyncio.run(scenario()) == (
        "RuntimeClass 'gvisor' (for OCI runtime 'runsc') does not exist on the cluster; "
        "sandbox-orch never falls back to another runtime"
    )


def test_emulator_unmapped_runtime_is_refused(policy):
    plan, sandboxes = admitted(textwrap.dedent(_workflow("fails")), policy("runsc"))
    settings = type(SETTINGS)(namespace=SETTINGS.namespace, runtime_classes={"runc": None})

    async def scenario():
        async with emulated() as (_, cluster, _):
            with pytest.raises(InfrastructureError) as refused:
                await open_backend(settings, None, plan, sandboxes, cluster=cluster)
            return str(refused.value)

    assert asyncio.run(scenario()) == (
        "OCI runtime 'runsc' has no RuntimeClass configured for this cluster"
    )


def test_emulator_doctor_reports_labels_and_runtime_classes():
    async def scenario():
        async with emulated(runtime_classes=()) as (_, cluster, _):
            unpinned = dataclasses.replace(SETTINGS, images={})
            return await describe(cluster, SETTINGS), (await describe(cluster, unpinned))[-1]

    described, unpinned = asyncio.run(scenario())
    assert described == [
        "namespace so-test: Pod Security labels: pod-security.kubernetes.io/enforce=restricted",
        "namespace so-test: enforces restricted: ok",
        "runtime runc: the cluster's default (no RuntimeClass)",
        "runtime runsc: RuntimeClass gvisor missing",
        "egress: proxy image sandbox-orch/egress-proxy pinned: ok",
    ]
    assert unpinned == (
        "egress: proxy image sandbox-orch/egress-proxy not pinned: runs with egress are "
        "refused (--image sandbox-orch/egress-proxy=...)"
    )


def test_egress_without_the_proxy_image_pinned_is_refused_before_connecting(policy, tmp_path):
    text = (
        textwrap.dedent(POLICY)
        .replace("RUNTIME", "runc")
        .replace("network: {egress: []}", "network: {egress: [example.com:443]}")
    )
    (tmp_path / "egress.yaml").write_text(text)
    workflow = "version: 1\nname: e\nnodes:\n  out:\n    runtime: shell\n    command: [x]\n    network: {egress: [example.com:443]}\n"
    plan, sandboxes = admitted(workflow, load_policy(tmp_path / "egress.yaml"))
    images = {k: v for k, v in SETTINGS.images.items() if k != "sandbox-orch/egress-proxy"}
    settings = dataclasses.replace(SETTINGS, images=images)
    with pytest.raises(InfrastructureError) as refused:
        asyncio.run(open_backend(settings, None, plan, sandboxes, cluster=object()))
    assert str(refused.value) == (
        "egress needs the run's proxy pod: image 'sandbox-orch/egress-proxy' has no pinned "
        "reference configured for this cluster"
    )


def test_emulator_doctor_and_interactive_session_raise_clear_errors():
    from sandbox_orch.backend.base import BackendError

    async def scenario():
        async with emulated() as (_, cluster, _):
            backend = KubernetesBackend(cluster, SETTINGS)
            with pytest.raises(BackendError, match="no interactive terminals"):
                await backend.start_terminal("x")
            with pytest.raises(BackendError, match="its copy on this host"):
                await backend.read_only_view(
                    "v-ro", await backend.create_volume("v", {}, 1, "1:1"), {}
                )

    asyncio.run(scenario())


def test_settings_differ_is_a_backend_error():
    assert issubclass(SettingsDiffer, Exception)


# --- the command line: refusals before anything starts (no cluster needed) ----------


def _cli(args, env=None):
    from click.testing import CliRunner

    from sandbox_orch.cli import main

    return CliRunner().invoke(main, args, env=env)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--namespace", "x"], "--namespace: only with --backend kubernetes"),
        (["--image", "a=b"], "--image: only with --backend kubernetes"),
        (["--backend", "kubernetes"], "--namespace: needed with --backend kubernetes"),
        (
            ["--backend", "kubernetes", "--namespace", "x", "--runtime-class", "runc"],
            "--runtime-class: 'runc': expected NAME=VALUE",
        ),
    ],
)
def test_cluster_options_are_refused_with_exit_2(args, says):
    done = _cli(["run", "configs/examples/hello.yaml", *args])
    assert done.exit_code == 2 and done.output.strip() == says


def test_unreachable_cluster_exits_3_for_run_and_doctor(tmp_path):
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {}}]\n"
    )
    env = {"KUBECONFIG": str(config), "SANDBOX_ORCH_HOME": str(tmp_path / "home")}
    k8s = ["--backend", "kubernetes", "--namespace", "so-test", "--runtime-class", "runc="]
    for args in (
        ["run", "configs/examples/hello.yaml", "--ci", *k8s],
        ["doctor", *k8s],
        ["gc", *k8s],
    ):
        done = _cli(args, env)
        assert done.exit_code == 3, done.output
        assert done.output.startswith("sandbox-orch: ")
        assert ": the API server did not answer (Cannot connect to host 127.0.0.1:9" in done.output


def test_emulator_oci_runtimes_are_the_existing_runtime_classes_with_declared_args():
    from sandbox_orch.orchestrator import runtime_problem

    async def scenario(annotated: bool):
        async with emulated(runtime_classes=()) as (emulator, cluster, _):
            import kmock

            metadata = {"name": "gvisor"}
            if annotated:
                metadata["annotations"] = {"sandbox-orch.runtime-args": "--oci-seccomp"}
            emulator.objects[kmock.resource("node.k8s.io/v1/runtimeclasses"), None, "gvisor"] = {
                "metadata": metadata
            }
            return await KubernetesBackend(cluster, SETTINGS).oci_runtimes()

    assert asyncio.run(scenario(True)) == {"runc": [], "runsc": ["--oci-seccomp"]}
    bare = asyncio.run(scenario(False))
    assert bare == {"runc": [], "runsc": []}
    assert "lacks --oci-seccomp" in str(runtime_problem("runsc", bare))


def test_emulator_create_refuses_specs_it_cannot_honour(policy):
    import dataclasses

    from sandbox_orch.backend.base import BackendError
    from sandbox_orch.execution import NodeRunner
    from sandbox_orch.mounts import BindMount

    plan, sandboxes = admitted(_workflow("fails"), policy("runc"))
    consumer = dataclasses.replace(
        plan.nodes["fails"], inputs=(SimpleNamespace(path="/in", producer="p", name="a"),)
    )
    unsourced = (VolumeMount("v-ro", "/in", False),)  # an input with no copy on this host

    async def scenario():
        async with emulated() as (emulator, cluster, _):
            backend = KubernetesBackend(cluster, SETTINGS)
            spec = NodeRunner(backend, "r-k8s-3", DEAD_OWNER).spec(
                plan.nodes["fails"], sandboxes["fails"], 1
            )
            refused = []
            for changed in (
                {"origin": None},
                {"tty": True},
                {"mounts": (BindMount("/src", "/work", read_only=False),)},
                {"origin": (consumer, sandboxes["fails"]), "volumes": unsourced},
            ):
                with pytest.raises(BackendError) as error:
                    await backend.create(dataclasses.replace(spec, **changed))
                refused.append(str(error.value))
            return refused, [r.method for r in list(emulator)]

    refused, methods = asyncio.run(scenario())
    assert refused == [
        "the Kubernetes backend needs the admitted node of a spec",
        "the Kubernetes backend does not do interactive sessions yet (see the README)",
        "mount at /work is read-write: not on a cluster",
        "input at /in has no copy on this host to deliver",
    ]
    assert "POST" not in methods


def test_emulator_network_policy_left_behind_is_reported_exit_3(policy):
    import kmock

    plan, sandboxes = admitted(_workflow("fails"), policy("runc"))

    async def scenario():
        async with emulated() as (emulator, cluster, _):
            deleting = ("delete", re.compile(r".*/networkpolicies/.*"))
            emulator[deleting] << kmock.KubernetesError(500, "Boom", "etcd is away")
            backend = KubernetesBackend(cluster, SETTINGS)
            from sandbox_orch.execution import NodeRunner

            runner = NodeRunner(backend, "r-k8s-4", DEAD_OWNER)
            job = await backend.create(runner.spec(plan.nodes["fails"], sandboxes["fails"], 1))
            await backend.remove(job)
            with pytest.raises(InfrastructureError) as error:
                await backend.close()
            return str(error.value)

    message = asyncio.run(scenario())
    assert message.startswith(
        "could not remove: delete NetworkPolicy sandbox-orch-r-k8s-4-deny: 500"
    )


def test_no_kubeconfig_is_one_clear_line(tmp_path, monkeypatch, capsys):
    from sandbox_orch.backend.kubernetes.client import ClusterError, connect

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    with pytest.raises(ClusterError) as missing:
        asyncio.run(connect("ns"))
    assert str(missing.value) == (
        f"no kubeconfig at {tmp_path / 'absent'} ($KUBECONFIG, else ~/.kube/config)"
    )
    monkeypatch.delenv("KUBECONFIG")
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ClusterError, match=r"no kubeconfig at ~/.kube/config"):
        asyncio.run(connect("ns"))
    assert capsys.readouterr().err == ""  # nothing of the client's own besides


def test_emulator_every_call_carries_the_kubeconfig_token(tmp_path, monkeypatch):
    """Calls go by path through the client's ApiClient: its authentication still applies
    to each of them (a token user, here), as it did through the generated API classes."""
    from sandbox_orch.backend.kubernetes.client import connect

    token = "k8s-unit-token-5c4b3a"

    async def scenario():
        async with emulated() as (emulator, _, _):
            server = emulator.servers[0]
            config = tmp_path / "config"
            config.write_text(
                "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
                f"clusters: [{{name: k, cluster: {{server: '{server.url}'}}}}]\n"
                "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
                f"users: [{{name: u, user: {{token: {token}}}}}]\n"
            )
            monkeypatch.setenv("KUBECONFIG", str(config))
            cluster = await connect("so-test")
            try:
                await cluster.namespace_object()
                await cluster.listing("Pod", "a=b")
                await cluster.delete("Pod", "gone-x1")
            finally:
                await cluster.close()
            return [r for r in list(emulator) if r.headers.get("User-Agent") != "kmock"]

    requests = asyncio.run(scenario())
    assert len(requests) >= 3
    assert all(r.headers.get("Authorization") == f"Bearer {token}" for r in requests)
    assert [str(r.url.path) for r in requests][-1] == "/api/v1/namespaces/so-test/pods/gone-x1"
    assert requests[-1].params.get("gracePeriodSeconds") == "0"


# --- waiting on the run's pod watch (podwatch.py) -------------------------------------


def _pod_requests(emulator):
    """(lists of one Job's pods, lists of the run's pods, watches of the run's pods)."""
    pods = [r for r in list(emulator) if r.method == "GET" and str(r.url.path).endswith("/pods")]
    selectors = [r.params.get("labelSelector", "") for r in pods]
    watches = [r for r in pods if r.params.get("watch") == "true"]
    one_job = [s for s in selectors if s.startswith("job-name=")]
    run = [r for r in pods if r.params.get("labelSelector", "").startswith(RUN_LABEL)]
    return one_job, [r for r in run if r not in watches], watches


def test_emulator_a_run_waits_on_one_pod_watch_not_on_polling(policy):
    # A quiet watch is trusted for a minute: only the watch can have ended these nodes.
    report, _, emulator, _ = asyncio.run(_run(policy("runc"), WORKFLOW, SCRIPTS, resync=60))
    nodes = report.results["nodes"]
    assert [nodes[n]["status"] for n in ("ok", "fails", "oom", "slow", "after")] == [
        "succeeded", "failed", "failed", "timed_out", "succeeded",
    ]  # fmt: skip
    one_job, run_lists, watches = _pod_requests(emulator)
    assert len(run_lists) == 1 and len(watches) == 1  # one list, then one watch, per run
    assert watches[0].params["labelSelector"] == f"{RUN_LABEL}=r-k8s-1"
    assert len(one_job) <= 1  # the timed-out node's kill reads its pod once


def _watch_replaced(monkeypatch, replacement):
    from sandbox_orch.backend.kubernetes.client import Cluster

    original = Cluster.watch
    calls = []

    def watch(self, kind, selector, version):
        calls.append(version)
        return replacement(original, self, kind, selector, version, len(calls))

    monkeypatch.setattr(Cluster, "watch", watch)
    return calls


@pytest.mark.parametrize("how", ["fails", "stalls"])
def test_emulator_a_broken_pod_watch_costs_time_never_a_node(policy, monkeypatch, how):
    from sandbox_orch.backend.kubernetes.client import ClusterError

    async def broken(original, cluster, kind, selector, version, call):
        if how == "fails":
            raise ClusterError("watch of pods: connection reset")
        await asyncio.Event().wait()  # a stream that never sends a byte again
        yield {}

    calls = _watch_replaced(monkeypatch, broken)
    report, left, emulator, _ = asyncio.run(_run(policy("runc"), WORKFLOW, SCRIPTS, resync=0.2))
    nodes = report.results["nodes"]
    assert nodes["ok"]["status"] == "succeeded" and nodes["ok"]["stdout_tail"] == "hi\n"
    assert nodes["fails"]["exit_code"] == 3 and nodes["slow"]["status"] == "timed_out"
    assert nodes["oom"]["reason"] == "killed: out of memory"
    assert left == {JOBS: {}, SECRETS: {}, POLICIES: {}}
    one_job, _, _ = _pod_requests(emulator)
    assert one_job  # the nodes read their pods themselves
    if how == "stalls":
        assert len(calls) == 1
    else:  # retried with a growing delay, never in a tight loop
        assert 1 < len(calls) < 40


def test_emulator_a_pod_watch_told_its_version_is_gone_lists_again(policy, monkeypatch):
    async def gone_once(original, cluster, kind, selector, version, call):
        if call == 1:
            yield {"type": "ERROR", "object": {"kind": "Status", "code": 410}}
            return
        async for event in original(cluster, kind, selector, version):
            yield event

    calls = _watch_replaced(monkeypatch, gone_once)
    report, _, emulator, _ = asyncio.run(_run(policy("runc"), WORKFLOW, SCRIPTS, resync=60))
    assert report.results["nodes"]["after"]["status"] == "succeeded"
    _, run_lists, _ = _pod_requests(emulator)
    assert len(calls) == 2 and len(run_lists) == 2  # listed again, then watched again
