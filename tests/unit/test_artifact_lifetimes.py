"""Artifact volumes are released as soon as nothing needs them, never while a consumer
may still mount them, and the run-wide `artifacts_total` ceiling holds: on the memory
backend, for both volume stores (host directories; engine volumes kept by holders)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from sandbox_orch import orchestrator
from sandbox_orch.artifacts import ArtifactsRefused, ArtifactVolumes, Lifetimes
from sandbox_orch.backend import ContainerSpec
from sandbox_orch.backend.memory import MemoryBackend, Outcome
from sandbox_orch.errors import InputRefused
from sandbox_orch.events import NodeFinished
from sandbox_orch.execution import NODE_LABEL
from sandbox_orch.orchestrator import run_plan
from sandbox_orch.policy import Policy
from sandbox_orch.store import HOME_ENV

from .helpers import admitted, default_policy, plan_of

CAP = 1024**3  # the default policy's artifacts limit


def policy_with_total(volumes: int) -> Policy:
    policy = default_policy()
    limits = dataclasses.replace(policy.limits, artifacts_total=volumes * CAP)
    return dataclasses.replace(policy, limits=limits)


@pytest.fixture(params=["host", "engine"])
def store(request, tmp_path, monkeypatch) -> Path | None:
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    return tmp_path / "volumes" if request.param == "host" else None


@pytest.fixture
def made(monkeypatch) -> list[ArtifactVolumes]:
    """The run's ArtifactVolumes, to wait on its copies and releases from a node's script."""
    found = []

    class Recorded(ArtifactVolumes):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            found.append(self)

    monkeypatch.setattr(orchestrator, "ArtifactVolumes", Recorded)
    return found


async def copied_and_released(made: list[ArtifactVolumes], node: str) -> Outcome:
    """A node's script: ends once `node`'s copy and every release due so far are done, so
    a release that comes too early has come before the next node starts."""
    (volumes,) = made
    await asyncio.gather(volumes._copies[node], return_exceptions=True)
    await asyncio.gather(*list(volumes._releases), return_exceptions=True)
    return Outcome()


class Run:
    """One run on the memory backend; at each node container's start, which of the run's
    volumes and holders exist."""

    def __init__(self, text: str, policy: Policy, store: Path | None, script=None) -> None:
        self.plan, self.sandboxes = admitted(text, policy)
        self.policy = policy
        self.seen: dict[str, set[str]] = {}  # "node#attempt" -> volume names then
        self.holders: dict[str, int] = {}
        self.on_finished = lambda event: None
        self.script = script or (lambda spec: Outcome())
        self.backend = MemoryBackend(self.record, volume_root=store)
        self.store = store
        self.problems: list[str] = []  # checks that failed in a node's script
        self.finished: set[str] = set()  # nodes with no attempt to follow
        # "<attempt>-<artifact>" -> the nodes finished when it was removed
        self.removed: dict[str, set[str]] = {}
        self.gone: dict[str, asyncio.Event] = {}
        remove = self.backend.remove_resource

        async def remove_and_record(resource):
            if resource.kind == "volume" and resource.id in self.backend.volumes:
                self.removed[short(resource.id)] = set(self.finished)
                self.gone_event(short(resource.id)).set()
            await remove(resource)

        self.backend.remove_resource = remove_and_record

    def gone_event(self, name: str) -> asyncio.Event:
        return self.gone.setdefault(name, asyncio.Event())

    async def until_gone(self, name: str) -> Outcome:
        """A node's script: ends once volume `name` was released (or fails the test)."""
        await asyncio.wait_for(self.gone_event(name).wait(), 10)
        return Outcome()

    def record(self, spec: ContainerSpec):
        """The script: checks what the node mounts (a failed check fails the node: a
        script that raised would never exit) and notes what exists, then runs `script`."""
        try:
            self.check(spec)
        except AssertionError as error:
            self.problems.append(f"{spec.labels[NODE_LABEL]}: {error!r}")
            return Outcome(exit_code=99)
        return self.script(spec)

    def check(self, spec: ContainerSpec) -> None:
        key = f"{spec.labels[NODE_LABEL]}#{spec.labels['sandbox-orch.attempt']}"
        self.seen[key] = {short(n) for n in self.backend.volumes if not n.endswith("-ro")}
        self.holders[key] = sum(
            1  # by role: the image is the id preflight pinned, not its name
            for c in self.backend.containers.values()
            if c.spec.labels.get("sandbox-orch.role") == "artifact-holder"
        )
        wanted = {i.path for i in self.plan.nodes[spec.labels[NODE_LABEL]].inputs}
        inputs = [m for m in spec.volumes if m.target in wanted]  # every input is mounted,
        assert len(inputs) == len(wanted), key
        assert all(m.volume.endswith("-ro") for m in inputs), key  # as a read-only view
        for mount in spec.volumes:  # whatever a node mounts exists
            assert mount.volume in self.backend.volumes, (key, mount.volume)
            if self.store is not None:
                assert (self.store / mount.volume).is_dir(), (key, mount.volume)

    def go(self):
        def emit(event):
            if isinstance(event, NodeFinished):
                if not event.retrying:
                    self.finished.add(event.node)
                self.on_finished(event)

        report = asyncio.run(
            run_plan(
                self.plan, self.policy, self.sandboxes, self.backend, "r1", emit, asyncio.Event()
            )
        )
        assert self.problems == []
        return report


def short(volume: str) -> str:
    """sandbox-orch-<run>-<node>-<attempt>-<artifact> -> "<attempt>-<artifact>"."""
    return "-".join(volume.rsplit("-", 2)[-2:])


def held(run: Run, key: str) -> set[str]:
    """Volumes existing when `key` started, as "<attempt>-<artifact>" of each producer."""
    return run.seen[key]


CHAIN = """
version: 1
name: chain
nodes:
  p1: {command: [x], outputs: {artifacts: [{name: a, path: /out}]}}
  p2:
    needs: [p1]
    command: [x]
    inputs: [{from: p1/a, path: /in}]
    outputs: {artifacts: [{name: b, path: /out}]}
  p3:
    needs: [p2]
    command: [x]
    inputs: [{from: p2/b, path: /in}]
    outputs: {artifacts: [{name: c, path: /out}]}
  p4:
    needs: [p3]
    command: [x]
    inputs: [{from: p3/c, path: /in}]
"""


def test_a_chain_of_producers_fits_a_ceiling_of_two_volumes_by_releasing(store):
    run = Run(CHAIN, policy_with_total(2), store)
    report = run.go()
    assert report.status.value == "succeeded", {
        n: v["reason"] for n, v in report.results["nodes"].items()
    }
    # Each node sees only its input and its own volume: the one before was released.
    assert held(run, "p2#1") == {"1-a", "1-b"}
    assert held(run, "p3#1") == {"1-b", "1-c"}
    if store is None:
        assert run.holders["p3#1"] == 2  # p2's and p3's; p1's went with its volume
    # Never before its producer and its one consumer had finished.
    assert run.removed["1-a"] >= {"p1", "p2"} and run.removed["1-b"] >= {"p2", "p3"}
    assert run.backend.volumes == {} and run.backend.containers == {}
    for node in ("p1", "p2", "p3"):
        (record,) = report.results["nodes"][node]["artifacts"]
        assert record["complete"] is True


def test_without_release_the_same_chain_would_not_fit():
    """The ceiling is real: the reservations alone, with nothing released, refuse p3."""
    plan = plan_of(CHAIN)
    lifetimes = Lifetimes(plan.nodes, 2 * CAP)
    lifetimes.reserve([CAP])
    lifetimes.reserve([CAP])
    with pytest.raises(ArtifactsRefused, match="artifacts_total"):
        lifetimes.reserve([CAP])


TWO_CONSUMERS = """
version: 1
name: two
nodes:
  p: {command: [x], outputs: {artifacts: [{name: a, path: /out}]}}
  c1:
    needs: [p]
    command: [x]
    inputs: [{from: p/a, path: /in}]
  c2:
    needs: [c1]
    command: [x]
    inputs: [{from: p/a, path: /in}]
  after: {needs: [c2], command: [x]}
"""


def test_a_volume_stays_while_a_consumer_may_still_mount_it_then_goes(store, made):
    run = Run(TWO_CONSUMERS, policy_with_total(1), store)

    def script(spec: ContainerSpec):
        node = spec.labels[NODE_LABEL]
        if node == "c1":  # c2 starts only after p was copied: no release may come then
            return copied_and_released(made, "p")
        if node == "after":  # ends only once p's volume is gone: released during the run
            return run.until_gone("1-a")
        return Outcome()

    run.script = script
    report = run.go()
    assert report.status.value == "succeeded", {
        n: v["reason"] for n, v in report.results["nodes"].items()
    }
    assert held(run, "c1#1") == held(run, "c2#1") == {"1-a"}  # c1 done, c2 still to come
    assert run.removed["1-a"] >= {"p", "c1", "c2"} and "after" not in run.removed["1-a"]
    if store is None:
        assert run.backend.containers == {}  # the holder went with it


SKIPPED_CONSUMER = """
version: 1
name: skip
nodes:
  p: {command: [x], outputs: {artifacts: [{name: a, path: /out}]}}
  c:
    needs: [p]
    when: "nodes.p.exit_code == 7"
    command: [x]
    inputs: [{from: p/a, path: /in}]
  after: {needs: [c], when: "always()", command: [x]}
"""


def test_a_consumer_that_will_never_run_does_not_keep_a_volume(store):
    run = Run(SKIPPED_CONSUMER, policy_with_total(1), store)
    run.script = lambda spec: (
        run.until_gone("1-a") if spec.labels[NODE_LABEL] == "after" else Outcome()
    )
    report = run.go()
    assert report.results["nodes"]["c"]["status"] == "skipped"
    assert report.results["nodes"]["after"]["status"] == "succeeded"
    assert "c#1" not in run.seen
    assert run.removed["1-a"] >= {"p", "c"}


def failing_once(spec: ContainerSpec) -> Outcome:
    return Outcome(exit_code=1 if spec.labels["sandbox-orch.attempt"] == "1" else 0)


RETRIED = """
version: 1
name: retried
nodes:
  p:
    command: [x]
    retries: {limit: 1, on: [failed]}
    outputs: {artifacts: [{name: a, path: /out}]}
  c:
    needs: [p]
    command: [x]
    inputs: [{from: p/a, path: /in}]
"""


def test_a_retry_replaces_the_previous_attempts_volumes_within_the_ceiling(store):
    run = Run(RETRIED, policy_with_total(1), store, failing_once)
    report = run.go()
    node = report.results["nodes"]["p"]
    assert (node["status"], node["attempts"]) == ("succeeded", 2), node
    assert held(run, "p#1") == {"1-a"}
    assert held(run, "p#2") == {"2-a"}  # attempt 1's went before attempt 2's were made
    assert held(run, "c#1") == {"2-a"}
    assert run.backend.volumes == {}


PARALLEL = """
version: 1
name: parallel
nodes:
  p1: {command: [x], outputs: {artifacts: [{name: a, path: /out}]}}
  p2: {command: [x], outputs: {artifacts: [{name: a, path: /out}]}}
"""


def test_a_producer_past_the_ceiling_fails_with_the_reason_before_its_container(store):
    finished = asyncio.Event()

    async def wait_for_the_other(spec: ContainerSpec) -> Outcome:
        await finished.wait()  # holds its volume until the other node has finished
        return Outcome()

    run = Run(PARALLEL, policy_with_total(1), store, wait_for_the_other)
    run.on_finished = lambda event: finished.set()
    report = run.go()
    nodes = report.results["nodes"]
    statuses = sorted((nodes["p1"]["status"], nodes["p2"]["status"]))
    assert statuses == ["failed", "succeeded"], nodes
    refused = nodes["p1"] if nodes["p1"]["status"] == "failed" else nodes["p2"]
    assert refused["exit_code"] is None and refused["artifacts"] == []
    assert "past the policy's artifacts_total (1g)" in refused["reason"]
    assert "volumes still needed by other nodes hold 1g" in refused["reason"]
    started = {key.split("#")[0] for key in run.seen}
    assert len(started) == 1  # the refused node's container was never created
    assert run.backend.volumes == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            """
            version: 1
            name: two-own
            nodes:
              p: {command: [x], outputs: {artifacts: [{name: a, path: /a}, {name: b, path: /b}]}}
            """,
            "its 2 artifact(s) and 0 input(s) hold 2g at once (1g each), above the policy's "
            "artifacts_total (1g)",
        ),
        (
            """
            version: 1
            name: own-and-input
            nodes:
              p: {command: [x], outputs: {artifacts: [{name: a, path: /a}]}}
              c:
                needs: [p]
                command: [x]
                inputs: [{from: p/a, path: /in}]
                outputs: {artifacts: [{name: b, path: /b}]}
            """,
            "its 1 artifact(s) and 1 input(s) hold 2g at once",
        ),
    ],
)
def test_admission_refuses_a_node_that_can_never_fit(text, message):
    with pytest.raises(InputRefused) as refused:
        admitted(text, policy_with_total(1))
    (problem,) = refused.value.problems
    assert "outputs.artifacts" in str(problem) and message in str(problem)


def test_an_unset_ceiling_is_four_artifacts(tmp_path):
    from sandbox_orch.policy import load_policy

    path = tmp_path / "p.yaml"
    path.write_text("version: 1\nname: p\nlimits: {artifacts: 64m}\n")
    assert load_policy(path).limits.artifacts_total == 4 * 64 * 1024**2
    path.write_text("version: 1\nname: p\nlimits: {artifacts: 64m, artifacts_total: 1g}\n")
    assert load_policy(path).limits.artifacts_total == 1024**3


def test_an_interrupt_mid_chain_still_removes_every_volume_view_and_holder(store):
    """Ctrl-C while p3 runs: some volumes were released, others are held; close() removes
    what is left, releases under way included."""
    stop = asyncio.Event()
    run = Run(CHAIN, policy_with_total(2), store)

    def script(spec: ContainerSpec) -> Outcome:
        if spec.labels[NODE_LABEL] == "p3":
            stop.set()
            return Outcome(hang=True)
        return Outcome()

    run.script = script
    report = asyncio.run(
        run_plan(run.plan, run.policy, run.sandboxes, run.backend, "r1", lambda e: None, stop)
    )
    assert report.status.value == "cancelled"
    assert report.results["nodes"]["p3"]["status"] == "cancelled"
    assert run.backend.volumes == {} and run.backend.containers == {}
    if store is not None:
        assert list(store.iterdir()) == []


def test_a_volume_is_needed_until_its_producer_and_every_consumer_are_done():
    lifetimes = Lifetimes(plan_of(CHAIN).nodes, 8 * CAP)
    assert lifetimes.needed("p1", "a")  # p1 may run another attempt
    lifetimes.finished("p1")
    assert lifetimes.needed("p1", "a")  # p2 may still mount it
    lifetimes.finished("p2")
    assert not lifetimes.needed("p1", "a")


def test_a_volume_no_one_consumes_is_unneeded_once_its_producer_is_done():
    lifetimes = Lifetimes(plan_of(CHAIN).nodes, 8 * CAP)
    assert lifetimes.needed("p1", "unconsumed")
    lifetimes.finished("p1")
    assert not lifetimes.needed("p1", "unconsumed")


def test_a_refused_reservation_says_what_is_held():
    lifetimes = Lifetimes(plan_of(CHAIN).nodes, CAP)
    with pytest.raises(ArtifactsRefused) as nothing:
        lifetimes.reserve([CAP, CAP])
    assert str(nothing.value) == (
        "its 2 artifact volume(s) (2g) would take the run's artifacts past the policy's "
        "artifacts_total (1g); volumes still needed by other nodes hold nothing"
    )
    lifetimes.reserve([CAP // 2])
    with pytest.raises(ArtifactsRefused) as some:
        lifetimes.reserve([CAP])
    assert str(some.value).endswith("volumes still needed by other nodes hold 512m")
    assert lifetimes.reserved == CAP // 2  # all or nothing: the refused one holds nothing
    lifetimes.free(CAP)
    assert lifetimes.reserved == 0  # never below nothing
