"""KubernetesBackend: the backend interface on a cluster, one Job per node attempt.

- create: the node's Secret (its secrets' values, read by the runner), then its Job,
  suspended (no pod yet), built by job.py from the node and sandbox the spec came from
  (`ContainerSpec.origin`); the stored Job is read back and compared (readback.py): one
  that differs is deleted and SettingsDiffer raised. The run's deny-all NetworkPolicies
  are created before its first Job, and deleted by `close`.
- start: releases the Job (`suspend: false`); a node's inputs and read-only mounts are
  delivered into its pod before it runs (deliver.py); then its pod's log is followed
  into the sink.
- wait: until its pod's container has terminated (exit code, OOMKilled), after comparing
  the pod's spec with the Job's template once it exists. The pod's states come from one
  watch per run (podwatch.py), not from polling each pod.
- kill: suspends the Job (its controller then makes no new pod) and deletes the pod with
  no grace period (SIGKILL). remove: the Job (Foreground: its pods first) and its Secret.
- labelled / remove_resource: the run's Jobs, Secrets ("container") and NetworkPolicies
  ("network"), with their annotations as labels (the owner is only an annotation).
- run_in / export: a command in a container of the Job's pod (its `holder` by default:
  ours, never beside the node's code), over the API server's exec endpoint (podexec.py).
  run_in: its exit code and stdout (at most RUN_IN_CAP bytes); export: `tar` in the
  container writes the path's archive, named from its last component as Docker's archive
  API does, and `consume` reads it as it comes (the artifacts' `extract` applies its
  rules to it).
- volumes: the "pod" store. An artifact is a memory emptyDir of its producer's pod (job.py
  makes them from the node), so `create_volume` creates nothing on the cluster and the
  producer's Job is its volumes' holder: the artifacts' code measures and copies them in
  it and then removes it (volume resources themselves have nothing to remove). A
  consumer's input is the producer's copy on this host, which `start` delivers.

A container id here is the Job's name. The client is client.py (the official one).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import posixpath
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, BinaryIO, TypeVar

from ...errors import InfrastructureError
from ...execution import ATTEMPT_LABEL, OWNER_LABEL, RUN_LABEL
from ..base import (
    ALL_KINDS,
    Backend,
    BackendError,
    ContainerSpec,
    ExitStatus,
    OutputSink,
    Resource,
    ResourceKind,
    SettingsDiffer,
    Volume,
    VolumeStore,
)
from .client import Cluster
from .deliver import (
    DELIVER,
    RELEASE_ARGV,
    Delivery,
    archive,
    deliver_state,
    deliveries,
    extract_argv,
)
from .egress import PodEgressProxy
from .env import has_egress
from .job import CONTAINER, HOLDER, NodeAttempt, node_job
from .labels import label_value
from .names import secret_name
from .network import run_network_policies
from .podexec import Ran, pod_exec
from .pods import KILLED_EXIT, exit_status, has_output, job_pods
from .podwatch import RESYNC, PodWatch
from .readback import job_differs, pod_differs
from .settings import ClusterSettings, pinned_image

T = TypeVar("T")
LOG_DRAIN = 30.0  # seconds the log may lag its container's end before it is dropped
RUN_IN_CAP = 1 << 20  # bytes of a `run_in` command's stdout
# What `labelled` lists for each kind, and the id prefix of each.
LISTED: dict[ResourceKind, tuple[str, ...]] = {
    "container": ("Job", "Secret"),
    "network": ("NetworkPolicy",),
    "volume": (),
}
NOT_HERE = "the Kubernetes backend does not do {} yet (see the README)"


class KubernetesBackend(Backend):
    holds_containers = False  # nothing is prepared ahead of time on a cluster (yet)

    def __init__(self, cluster: Cluster, settings: ClusterSettings, resync: float = RESYNC) -> None:
        self.cluster = cluster
        self.settings = settings
        self.resync = resync  # seconds a wait trusts the run's pod watch (podwatch.py)
        self._watches: dict[str, PodWatch] = {}  # by run id
        self._watch_of: dict[str, PodWatch] = {}  # by Job name
        self._jobs: dict[str, dict[str, Any]] = {}  # name -> the Job as asked
        self._logs: dict[str, asyncio.Task[None]] = {}
        # A consumer's inputs, delivered by `start`, and its node's timeout (their bound).
        self._deliveries: dict[str, tuple[list[Delivery], float]] = {}
        self._killed: set[str] = set()
        self._checked: set[str] = set()  # jobs whose pod was read back
        self._policies: dict[str, asyncio.Task[None]] = {}  # by run id
        self._policy_names: list[str] = []  # created: `close` deletes them
        self._egress: dict[str, PodEgressProxy] = {}  # by run id

    # --- create ---------------------------------------------------------------------

    async def create(self, spec: ContainerSpec) -> str:
        node, sandbox = self._origin(spec)
        run_id = spec.labels[RUN_LABEL]
        values = {k: spec.env[k] for k in sandbox.secrets}
        proxy = None
        if has_egress(sandbox):  # the runner opened it with the proxy: it listens
            egress = self._egress[run_id]
            proxy = egress.address
            values.update(egress.secret_values(node.name))
        attempt = NodeAttempt(
            run_id, spec.labels[OWNER_LABEL], int(spec.labels[ATTEMPT_LABEL]), proxy
        )
        job = node_job(node, sandbox, attempt, self.settings)
        job["spec"]["suspend"] = True  # no pod until `start`
        name = job["metadata"]["name"]
        delivered = deliveries(spec, node)  # an input that cannot be: before anything
        await self._network_policies(attempt)
        self._watch_of[name] = self._run_watch(attempt.run_id)
        secret = _secret(job, values)
        await self.cluster.create(secret)
        try:
            created = await self.cluster.create(job)
        except BaseException:
            await asyncio.shield(self.cluster.delete("Secret", secret["metadata"]["name"]))
            raise
        self._jobs[name] = job
        if job["spec"]["template"]["spec"].get("initContainers"):  # held until fed
            self._deliveries[name] = (delivered, sandbox.timeout)
        differs = job_differs(job, created)
        if differs:
            await asyncio.shield(self.remove(name))
            raise SettingsDiffer(f"the cluster changed the Job's {', '.join(differs[:5])}")
        return name

    def _origin(self, spec: ContainerSpec) -> Any:
        if spec.origin is None:
            raise BackendError("the Kubernetes backend needs the admitted node of a spec")
        if spec.tty:
            raise BackendError(NOT_HERE.format("interactive sessions"))
        return spec.origin

    def _run_watch(self, run_id: str) -> PodWatch:
        """The run's pod watch, started with its first Job (its list sees any pod)."""
        watch = self._watches.get(run_id)
        if watch is None:
            watch = PodWatch(self.cluster, f"{RUN_LABEL}={label_value(run_id)}", self.resync)
            self._watches[run_id] = watch
            watch.start()
        return watch

    async def _network_policies(self, attempt: NodeAttempt) -> None:
        """The run's deny-all policies, once per run, before its first pod can exist."""
        task = self._policies.get(attempt.run_id)
        if task is None or (task.done() and task.exception() is not None):
            task = asyncio.ensure_future(self._create_policies(attempt))
            self._policies[attempt.run_id] = task
        await asyncio.shield(task)

    async def _create_policies(self, attempt: NodeAttempt) -> None:
        for policy in run_network_policies(
            attempt.run_id, attempt.owner, self.settings.namespace, self.settings.proxy_port
        ):
            name = policy["metadata"]["name"]
            if name not in self._policy_names:
                await self.cluster.create(policy)
                self._policy_names.append(name)

    # --- the run's egress proxy (egress.py, proxypod.py) ---------------------------------

    def egress_proxy(
        self, run_id: str, owner: str, private_names: Iterable[str], oci_runtime: str
    ) -> PodEgressProxy:
        proxy = PodEgressProxy(self, run_id, owner, oci_runtime, private_names)
        self._egress[run_id] = proxy
        return proxy

    async def run_proxy(self, job: dict[str, Any], limit: float) -> dict[str, Any]:
        """The proxy's Job created (after the run's NetworkPolicies) and read back, and
        its pod once its container runs and it has an address (within `limit` s)."""
        metadata = job["metadata"]
        annotations = metadata["annotations"]
        await self._network_policies(NodeAttempt(annotations[RUN_LABEL], annotations[OWNER_LABEL]))
        name = metadata["name"]
        self._watch_of[name] = self._run_watch(annotations[RUN_LABEL])
        self._jobs[name] = job
        differs = job_differs(job, await self.cluster.create(job))
        if differs:
            raise SettingsDiffer(f"the cluster changed the proxy Job's {', '.join(differs[:5])}")
        try:
            async with asyncio.timeout(limit):
                return await self._serving(name)
        except TimeoutError:
            raise BackendError(f"its pod did not run within {limit:g} s") from None

    async def _serving(self, job: str) -> dict[str, Any]:
        async with contextlib.aclosing(self._states(job)) as states:
            async for pod in states:
                if pod is None:
                    continue
                if job not in self._checked:
                    await self._read_back(job, pod)
                status = pod.get("status") or {}
                if status.get("phase") in ("Succeeded", "Failed") or _deleting(pod):
                    raise BackendError(f"its pod ended ({status.get('phase') or 'deleted'})")
                if status.get("phase") == "Running" and status.get("podIP"):
                    return pod
        raise AssertionError("a pod's states never end")  # pragma: no cover

    # --- start, wait, output --------------------------------------------------------

    async def start(self, container_id: str, sink: OutputSink | None) -> None:
        released = await self.cluster.patch("Job", container_id, {"spec": {"suspend": False}})
        if released is None:
            raise BackendError(f"Job {container_id} is gone")
        delivery = self._deliveries.pop(container_id, None)
        if delivery is not None:
            await self._deliver(container_id, *delivery)
        if sink is not None:
            self._logs[container_id] = asyncio.ensure_future(self._follow(container_id, sink))

    async def _deliver(self, job: str, items: list[Delivery], limit: float) -> None:
        """Each input into the pod's deliver container, then "go": it exits 0 and the
        node's container starts. Within the node's timeout; BackendError otherwise."""
        try:
            async with asyncio.timeout(limit):
                pod = await self._deliverer_running(job)
                name = pod["metadata"]["name"]
                for item in items:
                    await self._put(name, item)
                # Its status may not come back: the container ends as it reads "go".
                # Whether it took it is read from the pod.
                with contextlib.suppress(BackendError):
                    await self.exec_in(name, DELIVER, RELEASE_ARGV, _capped)
                await self._delivered(job)
        except TimeoutError:
            raise BackendError(f"its inputs were not delivered within {limit:g} s") from None

    async def _deliverer_running(self, job: str) -> dict[str, Any]:
        """The pod once its deliver container runs (read back first: nothing goes into
        a pod the cluster changed)."""
        async with contextlib.aclosing(self._states(job)) as states:
            async for pod in states:
                if job in self._killed:
                    raise BackendError("killed before its inputs were delivered")
                if pod is None:
                    continue
                if job not in self._checked:
                    await self._read_back(job, pod)
                state, code = deliver_state(pod)
                if state == "running":
                    return pod
                if state == "terminated" or (pod.get("status") or {}).get("phase") == "Failed":
                    raise BackendError(f"its deliver container ended (exit {code}) unfed")
        raise AssertionError("a pod's states never end")  # pragma: no cover

    async def _put(self, pod: str, item: Delivery) -> None:
        argv = extract_argv(item.target)
        stream = archive(item.source, item.hidden, item.reader)
        ran = await self.exec_in(pod, DELIVER, argv, _capped, stream)
        if ran.code != 0:
            said = " ".join(ran.stderr.decode("utf-8", "replace").split())[-300:]
            raise BackendError(f"delivering {item.target}: tar exited {ran.code}: {said}")

    async def _delivered(self, job: str) -> None:
        async with contextlib.aclosing(self._states(job)) as states:
            async for pod in states:
                if pod is None:
                    raise BackendError("its pod went before its node started")
                state, code = deliver_state(pod)
                if state == "terminated":
                    if code == 0:
                        return
                    raise BackendError(f"its deliver container exited {code} when told to go")

    async def exec_in(
        self,
        pod: str,
        container: str,
        argv: list[str],
        consume: Callable[[BinaryIO], T],
        stdin: AsyncIterator[bytes] | None = None,
    ) -> Ran[T]:
        where = (self.cluster.namespace, pod, container)
        return await pod_exec(self.cluster.ws_api, *where, argv, consume=consume, stdin=stdin)

    async def _pod(self, job: str) -> dict[str, Any] | None:
        """The job's pod as the cluster has it now (one list call)."""
        pods = job_pods(await self.cluster.listed("Pod", f"job-name={job}"), job)
        return pods[0] if pods else None

    async def _states(self, job: str) -> AsyncIterator[dict[str, Any] | None]:
        """The job's pod (None while there is none), again after each change the run's
        watch sees; read from the cluster itself when the watch was quiet for `resync`."""
        watch = self._watch_of[job]
        while True:
            seen = watch.generation
            pods = watch.pods_of(job)
            yield pods[0] if pods else None
            if not await watch.changed(seen):
                yield await self._pod(job)

    async def _follow(self, job: str, sink: OutputSink) -> None:
        """The node's log into the sink (its caps are the sink's, as on Docker). A
        cluster's log is one stream: stderr arrives merged into stdout."""
        async with contextlib.aclosing(self._states(job)) as states:
            async for pod in states:
                if pod is not None and has_output(pod):
                    break
                if job in self._killed:
                    return
        async for chunk in self.cluster.log(pod["metadata"]["name"], CONTAINER):
            sink.write("stdout", chunk)

    async def wait(self, container_id: str) -> ExitStatus:
        status = await self._ended(container_id)
        follower = self._logs.pop(container_id, None)
        if follower is not None:
            # Past LOG_DRAIN the node's result stands; its output's end is lost.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LOG_DRAIN):
                    await follower
        return status

    async def _ended(self, job: str) -> ExitStatus:
        async with contextlib.aclosing(self._states(job)) as states:
            async for pod in states:
                if pod is not None and job not in self._checked:
                    await self._read_back(job, pod)
                status = exit_status(pod) if pod is not None else None
                if status is not None:
                    return status
                if job in self._killed and (pod is None or _deleting(pod)):
                    return ExitStatus(KILLED_EXIT)
        raise AssertionError("a pod's states never end")  # pragma: no cover

    async def _read_back(self, job: str, pod: dict[str, Any]) -> None:
        self._checked.add(job)
        asked = self._jobs.get(job)
        differs = pod_differs(asked["spec"]["template"], pod) if asked else []
        if differs:
            await self.kill(job)
            raise SettingsDiffer(f"the cluster changed the pod's {', '.join(differs[:5])}")

    async def kill(self, container_id: str) -> None:
        self._killed.add(container_id)
        await self.cluster.patch("Job", container_id, {"spec": {"suspend": True}})
        pod = await self._pod(container_id)
        if pod is not None:
            await self.cluster.delete("Pod", pod["metadata"]["name"])

    async def remove(self, container_id: str) -> None:
        follower = self._logs.pop(container_id, None)
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(BaseException):
                await follower
        await self.cluster.delete("Job", container_id, foreground=True)
        await self.cluster.delete("Secret", secret_name(container_id))
        self._jobs.pop(container_id, None)
        self._watch_of.pop(container_id, None)
        self._killed.discard(container_id)
        self._checked.discard(container_id)

    # --- what the run needs from the cluster ----------------------------------------

    async def image_id(self, image: str) -> str:
        """The image's pinned reference (settings.py): the cluster pulls it by digest."""
        return pinned_image(self.settings, image)

    async def oci_runtimes(self) -> dict[str, list[str]]:
        """The OCI runtimes whose RuntimeClass exists, each with the runtime arguments
        its operator declares on it (annotation RUNTIME_ARGS: the API cannot show a
        handler's flags, so `--oci-seccomp` for runsc is the operator's word)."""
        offered: dict[str, list[str]] = {}
        for oci, name in self.settings.runtime_classes.items():
            if name is None:
                offered[oci] = []
                continue
            found = await self.cluster.runtime_class(name)
            if found is not None:
                annotations = (found.get("metadata") or {}).get("annotations") or {}
                offered[oci] = str(annotations.get(RUNTIME_ARGS, "")).split()
        return offered

    # --- gc -------------------------------------------------------------------------

    async def labelled(
        self, label: str, value: str | None = None, kinds: tuple[ResourceKind, ...] = ALL_KINDS
    ) -> list[Resource]:
        selector = label if value is None else f"{label}={label_value(value)}"
        found = []
        for kind in kinds:
            for object_kind in LISTED[kind]:
                for item in await self.cluster.listed(object_kind, selector):
                    metadata = item.get("metadata") or {}
                    labels = metadata.get("labels") or {}
                    if label not in labels or (
                        value is not None and labels[label] != label_value(value)
                    ):
                        continue  # the server's filter is checked, not trusted
                    merged = {**labels, **(metadata.get("annotations") or {})}
                    found.append(Resource(kind, f"{object_kind}/{metadata['name']}", merged))
        return found

    async def remove_resource(self, resource: Resource) -> None:
        if resource.kind == "volume":
            return  # an emptyDir: it went, or goes, with its pod
        object_kind, _, name = resource.id.partition("/")
        if object_kind not in ("Job", "Secret", "NetworkPolicy"):
            raise BackendError(f"not a resource of this backend: {resource.id}")
        await self.cluster.delete(object_kind, name, foreground=object_kind == "Job")

    # --- artifacts: emptyDirs of the producer's pod -----------------------------------

    async def volume_store(self) -> VolumeStore:
        return "pod"

    async def create_volume(
        self, name: str, labels: dict[str, str], size: int, owner: str
    ) -> Volume:
        """Nothing to create: the producer's Job has the emptyDir, its size and its owner
        (job.py, from the node and sandbox its spec came from)."""
        return Volume(name)

    async def read_only_view(self, name: str, volume: Volume, labels: dict[str, str]) -> Volume:
        raise BackendError("a consumer's view of a pod's artifact is its copy on this host")

    # --- commands in a pod (the exec API) ---------------------------------------------

    async def run_in(
        self, container_id: str, argv: list[str], container: str = HOLDER
    ) -> tuple[int, bytes]:
        """(exit code, stdout); more than RUN_IN_CAP bytes of stdout is an error."""
        ran = await self._exec(container_id, container, argv, _capped)
        if len(ran.value) > RUN_IN_CAP or ran.code is None:
            raise BackendError(f"{argv[0]} in {container_id} printed more than {RUN_IN_CAP} bytes")
        return ran.code, ran.value

    async def export(
        self,
        container_id: str,
        path: str,
        consume: Callable[[BinaryIO], T],
        container: str = HOLDER,
    ) -> T:
        """`path`'s tar stream to `consume`. A consumer that stops early (past its budget)
        gets its way: the rest is not read. A tar that fails is an error, even if its
        archive was read whole (a file it could not read is missing from it)."""
        ran = await self._exec(container_id, container, archive_argv(path), consume)
        if ran.code not in (0, None):
            said = " ".join(ran.stderr.decode("utf-8", "replace").split())[-300:]
            raise BackendError(f"tar of {path} in {container_id} exited {ran.code}: {said}")
        return ran.value

    async def _exec(
        self, job: str, container: str, argv: list[str], consume: Callable[[BinaryIO], T]
    ) -> Ran[T]:
        pod = await self._pod(job)
        if pod is None:
            raise BackendError(f"Job {job} has no pod to run {argv[0]} in")
        return await self.exec_in(pod["metadata"]["name"], container, argv, consume)

    async def close(self) -> None:
        """Delete the run's NetworkPolicies (after its Jobs: the runner removed those)."""
        failed = []
        try:
            for watch in self._watches.values():
                await watch.close()
            await asyncio.gather(*self._policies.values(), return_exceptions=True)
            for name in list(self._policy_names):
                try:
                    await self.cluster.delete("NetworkPolicy", name)
                    self._policy_names.remove(name)
                except BackendError as error:
                    failed.append(str(error))
        finally:
            await self.cluster.close()
        if failed:  # `gc --backend kubernetes` finds them by label
            raise InfrastructureError(f"could not remove: {'; '.join(failed)}")


RUNTIME_ARGS = "sandbox-orch.runtime-args"


def _capped(stream: BinaryIO) -> bytes:
    """A command's stdout, up to one byte past RUN_IN_CAP (to tell it was more)."""
    return stream.read(RUN_IN_CAP + 1)


def archive_argv(path: str) -> list[str]:
    """`tar` writing `path` (absolute, no `..`) to stdout, its entries named from the
    path's last component (as Docker's archive API names them: `extract` expects it)."""
    parent, name = posixpath.split(path.rstrip("/"))
    if not path.startswith("/") or ".." in path.split("/") or name in ("", "."):
        raise BackendError(f"not a path to export: {path!r}")
    return ["tar", "-C", parent or "/", "-cf", "-", "--", name]


def _deleting(pod: dict[str, Any]) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def _secret(job: dict[str, Any], values: dict[str, str]) -> dict[str, Any]:
    """The node's own Secret: its granted secrets' values, by name (env.py refers to
    them); labelled as its Job, so `gc` finds it."""
    metadata = job["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "immutable": True,
        "metadata": {
            "name": secret_name(metadata["name"]),
            "namespace": metadata["namespace"],
            "labels": dict(metadata["labels"]),
            "annotations": dict(metadata["annotations"]),
        },
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }
