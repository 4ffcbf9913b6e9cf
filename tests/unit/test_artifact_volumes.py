"""ArtifactVolumes on its own, on the memory backend: the producer's and consumers' mounts,
the holder that keeps "engine" volumes (hardened, read-only, running no node code), how a
volume's use is measured (and refused when it cannot be), and the records and violations
the copy to the host leaves on the attempt."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import os
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from sandbox_orch.artifacts import (
    HOLDER_IMAGE,
    HOLDER_ROOT,
    ArtifactsRefused,
    ArtifactVolumes,
    Usage,
)
from sandbox_orch.backend import BackendError, ContainerSpec, Resource, Volume, VolumeMount
from sandbox_orch.backend.memory import MemoryBackend
from sandbox_orch.mounts import BindMount

from .helpers import admitted

RUN = {"sandbox-orch.run": "r1"}
CAP = 1024**3

TWO = """
version: 1
name: two
nodes:
  make:
    command: [x]
    outputs: {artifacts: [{name: dist, path: /out}, {name: logs, path: /logs}]}
  use:
    needs: [make]
    command: [x]
    inputs: [{from: make/dist, path: /in}]
"""


class Registered:
    """`register` and `dispose` for for_producer: records the holder's spec."""

    def __init__(self) -> None:
        self.specs: list[ContainerSpec] = []
        self.disposed: list[str] = []

    async def register(self, spec: ContainerSpec) -> str:
        self.specs.append(spec)
        return f"holder-{len(self.specs)}"

    async def dispose(self, container_id: str) -> None:
        self.disposed.append(container_id)


def produced(backend: MemoryBackend, tmp_path: Path, attempt: int = 1):
    """Run for_producer for `make` (attempt `attempt`): (volumes, its mounts, registered)."""
    plan, sandboxes = admitted(TWO)
    volumes = ArtifactVolumes(backend, dict(RUN), tmp_path / "copies", plan.nodes, 8 * CAP)
    registered = Registered()
    node, sandbox = plan.nodes["make"], sandboxes["make"]

    async def go():
        return await volumes.for_producer(
            node, sandbox, attempt, registered.register, registered.dispose
        )

    mounts = asyncio.run(go())
    return volumes, mounts, registered, plan, sandboxes


# --- mounts ------------------------------------------------------------------------------


def test_the_producer_mounts_each_artifact_writable_at_its_path(tmp_path):
    volumes, mounts, _, _, _ = produced(MemoryBackend(), tmp_path, attempt=2)
    assert mounts == (
        VolumeMount("sandbox-orch-r1-make-2-dist", "/out", read_only=False),
        VolumeMount("sandbox-orch-r1-make-2-logs", "/logs", read_only=False),
    )
    dist = volumes.current[("make", "dist")]
    assert (dist.node, dist.name, dist.path, dist.size) == ("make", "dist", "/out", CAP)
    assert dist.holder == "holder-1" and dist.volume == Volume("sandbox-orch-r1-make-2-dist")


def test_every_volume_is_labelled_with_the_run_and_its_node(tmp_path):
    backend = MemoryBackend()
    produced(backend, tmp_path)
    labels = {**RUN, "sandbox-orch.node": "make"}
    assert backend.volumes == {
        "sandbox-orch-r1-make-1-dist": labels,
        "sandbox-orch-r1-make-1-dist-ro": labels,  # consumed: it has a read-only view
        "sandbox-orch-r1-make-1-logs": labels,  # consumed by no one: no view
    }


def test_volumes_are_created_at_the_policy_cap_owned_by_the_nodes_user(tmp_path):
    backend = MemoryBackend()
    created = []
    create = backend.create_volume

    async def recorded(name, labels, size, owner):
        created.append((name, size, owner))
        return await create(name, labels, size, owner)

    backend.create_volume = recorded
    volumes, *_, sandboxes = produced(backend, tmp_path)
    user = sandboxes["make"].user
    assert created == [
        ("sandbox-orch-r1-make-1-dist", CAP, user),
        ("sandbox-orch-r1-make-1-logs", CAP, user),
    ]
    assert volumes._creating == set()  # only creations under way are waited for
    assert volumes.lifetimes.reserved == 2 * CAP  # both are held against the ceiling


def test_a_consumer_mounts_each_inputs_read_only_view_at_its_path(tmp_path):
    volumes, _, _, plan, _ = produced(MemoryBackend(), tmp_path)
    assert asyncio.run(volumes.for_consumer(plan.nodes["use"])) == (
        VolumeMount("sandbox-orch-r1-make-1-dist-ro", "/in", read_only=False),
    )


def test_host_volumes_carry_their_binds_writable_for_the_producer_a_view_read_only(tmp_path):
    root = tmp_path / "v"
    volumes, mounts, _, plan, _ = produced(MemoryBackend(volume_root=root), tmp_path)
    dist, logs = "sandbox-orch-r1-make-1-dist", "sandbox-orch-r1-make-1-logs"
    assert mounts == (
        VolumeMount(dist, "/out", False, BindMount(str(root / dist), "/out", False)),
        VolumeMount(logs, "/logs", False, BindMount(str(root / logs), "/logs", False)),
    )
    view = f"{dist}-ro"
    assert asyncio.run(volumes.for_consumer(plan.nodes["use"])) == (
        VolumeMount(view, "/in", False, BindMount(str(root / view), "/in", True)),
    )


def test_host_volumes_need_no_holder(tmp_path):
    volumes, _, registered, _, _ = produced(MemoryBackend(volume_root=tmp_path / "v"), tmp_path)
    assert registered.specs == [] and volumes.current[("make", "dist")].holder is None


# --- the holder ----------------------------------------------------------------------------


def test_the_holder_is_hardened_mounts_every_volume_read_only_and_runs_only_sleep(tmp_path):
    _, _, registered, _, sandboxes = produced(MemoryBackend(), tmp_path, attempt=3)
    (spec,) = registered.specs
    assert spec == ContainerSpec(
        name="sandbox-orch-r1-make-3-holder",
        image=HOLDER_IMAGE,
        argv=("sleep", "infinity"),
        user=sandboxes["make"].user,
        labels={**RUN, "sandbox-orch.node": "make", "sandbox-orch.role": "artifact-holder"},
        cpus=0.25,
        memory=64 * 1024 * 1024,
        pids=32,
        tmpfs={},
        volumes=(
            VolumeMount("sandbox-orch-r1-make-3-dist", f"{HOLDER_ROOT}/dist", read_only=True),
            VolumeMount("sandbox-orch-r1-make-3-logs", f"{HOLDER_ROOT}/logs", read_only=True),
        ),
    )
    assert HOLDER_ROOT == "/held" and HOLDER_IMAGE == "sandbox-orch/base"


# --- measuring a volume ----------------------------------------------------------------------


class Answering(MemoryBackend):
    """The holder answers the usage question with `answer`; records what was asked."""

    def __init__(self, answer: tuple[int, bytes]) -> None:
        super().__init__()
        self.answer = answer
        self.asked: list[tuple[str, list[str]]] = []

    async def run_in(self, container_id: str, argv: list[str]) -> tuple[int, bytes]:
        self.asked.append((container_id, argv))
        return self.answer


def usage_of(backend: MemoryBackend, tmp_path: Path) -> Usage | str:
    volumes, *_ = produced(backend, tmp_path)
    return asyncio.run(volumes._usage(volumes.current[("make", "dist")]))


def test_the_holder_is_asked_with_one_exec_about_the_volumes_mount(tmp_path):
    backend = Answering((0, b"100 60 1024 1000\n4096\t/held/dist\n"))
    assert usage_of(backend, tmp_path) == Usage(100, 60, 1024, 1000, 4096)
    script = 'stat -f -c "%b %a %c %d" "$1" && du -s -b "$1"'
    assert backend.asked == [("holder-1", ["sh", "-c", script, "sh", "/held/dist"])]


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ((1, b"100 60 1024 1000\n4096\t/held/dist\n"), "exited 1"),  # all there, but failed
        ((0, b"100 60 1024 1000\n"), "exited 0"),  # du printed nothing
        ((0, b"100 60 1024 x\n4096\t/held/dist\n"), "exited 0"),
        ((0, b"100 60 1024 1000\n-1\t/held/dist\n"), "exited 0"),
        ((0, b""), "exited 0, printing b''"),
        ((0, b"100 60 1024\n4096 /held/dist\n"), "exited 0"),  # stat said too little
    ],
)
def test_an_answer_that_is_not_five_numbers_is_not_trusted(tmp_path, answer, why):
    found = usage_of(Answering(answer), tmp_path)
    assert isinstance(found, str) and found.startswith("the holder's `stat -f` and `du` ")
    assert why in found


def test_a_long_answer_is_quoted_cut_short(tmp_path):
    found = usage_of(Answering((2, b"e" * 500)), tmp_path)
    assert found == f"the holder's `stat -f` and `du` exited 2, printing {(b'e' * 200)!r}"


class Answers(Answering):
    """The holder answers each question with the next of `answers`."""

    def __init__(self, *answers: tuple[int, bytes]) -> None:
        super().__init__(answers[0])
        self.answers = list(answers)

    async def run_in(self, container_id: str, argv: list[str]) -> tuple[int, bytes]:
        self.asked.append((container_id, argv))
        return self.answers.pop(0)


NOT_STARTED = (126, b"OCI runtime exec failed: read init-p: connection reset by peer\r\n")
MEASURED = (0, b"100 60 1024 1000\n4096\t/held/dist\n")


def test_an_exec_the_engine_could_not_start_is_asked_again_once(tmp_path):
    backend = Answers(NOT_STARTED, MEASURED)
    assert usage_of(backend, tmp_path) == Usage(100, 60, 1024, 1000, 4096)
    assert len(backend.asked) == 2 and backend.asked[0] == backend.asked[1]


def test_an_answer_the_engine_lost_is_asked_again_once(tmp_path):
    backend = Answers((0, b""), MEASURED)
    assert usage_of(backend, tmp_path) == Usage(100, 60, 1024, 1000, 4096)
    assert len(backend.asked) == 2 and backend.asked[0] == backend.asked[1]
    twice = Answers((0, b""), (0, b""), MEASURED)
    assert usage_of(twice, tmp_path) == "the holder's `stat -f` and `du` exited 0, printing b''"
    assert len(twice.asked) == 2


@pytest.mark.parametrize("answer", [(0, b"\n"), (0, b"100 60 1024 1000\n")])
def test_an_answer_with_some_output_is_not_asked_again(tmp_path, answer):
    backend = Answers(answer, MEASURED)
    assert isinstance(usage_of(backend, tmp_path), str) and len(backend.asked) == 1


def test_an_exec_that_twice_cannot_start_is_not_trusted(tmp_path):
    backend = Answers(NOT_STARTED, NOT_STARTED, MEASURED)
    found = usage_of(backend, tmp_path)
    assert isinstance(found, str) and found.startswith("the holder's `stat -f` and `du` exited 126")
    assert len(backend.asked) == 2


@pytest.mark.parametrize("code", [1, 2, 125, 127])
def test_only_an_exec_that_did_not_start_is_asked_again(tmp_path, code):
    backend = Answers((code, b""), MEASURED)
    assert isinstance(usage_of(backend, tmp_path), str) and len(backend.asked) == 1


def test_a_host_volume_is_measured_here(tmp_path):
    backend = MemoryBackend(volume_root=tmp_path / "v")
    volumes, *_ = produced(backend, tmp_path)
    held = volumes.current[("make", "dist")]
    (held.volume.host_path / "f").write_bytes(b"x" * 1234)
    usage = asyncio.run(volumes._usage(held))
    assert isinstance(usage, Usage) and usage.apparent == 1234
    info = os.statvfs(held.volume.host_path)  # this file system's (shared: free space moves)
    assert (usage.blocks, usage.inodes) == (info.f_blocks, info.f_files)
    assert 0 < usage.blocks_free <= usage.blocks and 0 < usage.inodes_free <= usage.inodes


def reasons_for(answers: dict[str, bytes], tmp_path: Path, limit: int = 1 << 20) -> list[str]:
    """over_limits with the holder answering per artifact (by its mount)."""

    class PerArtifact(MemoryBackend):
        async def run_in(self, container_id, argv):
            answer = answers[argv[-1].rsplit("/", 1)[1]]
            return (0, answer) if answer else (1, b"")

    volumes, _, _, plan, _ = produced(PerArtifact(), tmp_path)
    return asyncio.run(volumes.over_limits(plan.nodes["make"], limit))


FREE = b"1000 500 1024 1000\n10\tx\n"


def test_within_every_limit_no_reason(tmp_path):
    assert reasons_for({"dist": FREE, "logs": FREE}, tmp_path) == []


@pytest.mark.parametrize(
    ("blocks", "free", "full"), [(1000, 10, True), (1000, 9, True), (1000, 11, False)]
)
def test_a_volume_is_full_once_one_percent_or_less_is_free(tmp_path, blocks, free, full):
    answer = f"{blocks} {free} 1024 1000\n10\tx\n".encode()
    found = reasons_for({"dist": answer, "logs": FREE}, tmp_path)
    assert found == (["artifact 'dist' reached the policy's artifacts limit (1m)"] if full else [])


def test_every_artifact_and_every_limit_is_reported(tmp_path):
    """Unmeasurable, full, out of inodes and too large: each reason, for each artifact."""
    limit = 1 << 20
    found = reasons_for(
        {"dist": b"", "logs": f"1000 1 1024 0\n{limit + 1}\tx\n".encode()}, tmp_path, limit
    )
    assert found == [
        "artifact 'dist': its use could not be measured (the holder's `stat -f` and `du` "
        "exited 1, printing b'')",
        "artifact 'logs' reached the policy's artifacts limit (1m)",
        "artifact 'logs' reached the limit of 1023 files and directories (one per 4k of "
        "the policy's artifacts limit, 1m)",
        f"artifact 'logs' holds {limit + 1} bytes (apparent size, holes included), above "
        "the policy's artifacts limit (1m)",
    ]


def test_an_apparent_size_at_the_limit_is_within_it(tmp_path):
    limit = 1 << 20
    answer = f"1000 500 1024 1\n{limit}\tx\n".encode()
    assert reasons_for({"dist": answer, "logs": FREE}, tmp_path, limit) == []


# --- the copy's records and violations --------------------------------------------------------


def tar_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class Exporting(MemoryBackend):
    """The holder's archive API: a tar stream per path, or an error; records each call."""

    def __init__(self, archives: dict[str, bytes | BackendError | list[bytes]]) -> None:
        super().__init__()
        self.archives = archives  # a list: one per call, in turn
        self.exported: list[tuple[str, str]] = []

    async def export(self, container_id, path, consume):
        self.exported.append((container_id, path))
        archive = self.archives[path]
        if isinstance(archive, list):
            late = len(archive) > 1
            archive = archive.pop(0)
            for _ in range(10 if late else 0):  # all but the last answer come late: let
                await asyncio.sleep(0)  # anything racing run first (a yield, not a wait)
        if isinstance(archive, BackendError):
            raise archive
        return consume(io.BytesIO(archive))


def copied(backend: MemoryBackend, tmp_path: Path, violations=()) -> SimpleNamespace:
    volumes, _, _, plan, _ = produced(backend, tmp_path)
    attempt = SimpleNamespace(artifacts=None, violations=list(violations))

    async def go():
        volumes.copy_in_background(plan.nodes["make"], attempt)
        await volumes.finish()

    asyncio.run(go())
    return attempt


def test_the_copy_records_each_artifact_and_every_refusal(tmp_path):
    backend = Exporting(
        {
            "/held/dist": tar_of({"dist/a": b"hello", "/abs": b"x"}),
            "/held/logs": tar_of({"logs/l": b"12"}),
        }
    )
    attempt = copied(backend, tmp_path, violations=[{"kind": "earlier", "detail": "kept"}])
    assert backend.exported == [("holder-1", "/held/dist"), ("holder-1", "/held/logs")]
    root = tmp_path / "copies" / "make"
    dist, logs = attempt.artifacts
    assert {k: v for k, v in dist.items() if k != "sha256"} == {
        "name": "dist", "path": str(root / "dist"), "bytes": 5, "files": 1, "complete": True,
    }  # fmt: skip
    assert len(dist["sha256"]) == 64 and dist["sha256"] != logs["sha256"]
    assert (logs["name"], logs["path"], logs["bytes"], logs["files"]) == (
        "logs", str(root / "logs"), 2, 1,
    )  # fmt: skip
    assert (root / "dist" / "a").read_bytes() == b"hello"
    assert attempt.violations == [
        {"kind": "earlier", "detail": "kept"},
        {"kind": "artifact", "detail": "dist/'/abs': a path outside the artifact"},
    ]


def test_a_failed_copy_is_a_violation_and_the_next_artifact_is_still_copied(tmp_path):
    backend = Exporting(
        {"/held/dist": BackendError("engine gone"), "/held/logs": tar_of({"logs/l": b"12"})}
    )
    attempt = copied(backend, tmp_path)
    assert attempt.violations == [{"kind": "artifact", "detail": "dist: copy failed: engine gone"}]
    (logs,) = attempt.artifacts
    assert logs["name"] == "logs" and logs["files"] == 1


def test_the_copy_is_held_to_the_volume_cap(tmp_path, monkeypatch):
    """The budget is the volume's own cap: a file past it stops the copy."""
    backend = Exporting({"/held/dist": tar_of({"dist/big": b"x" * 2048}), "/held/logs": tar_of({})})
    volumes, _, _, plan, _ = produced(backend, tmp_path)
    for key, held in list(volumes.current.items()):
        volumes.current[key] = dataclasses.replace(held, size=1024)
    attempt = SimpleNamespace(artifacts=None, violations=[])

    async def go():
        volumes.copy_in_background(plan.nodes["make"], attempt)
        await volumes.finish()

    asyncio.run(go())
    assert attempt.artifacts[0]["complete"] is False and attempt.artifacts[0]["files"] == 0
    (violation,) = attempt.violations
    assert violation["detail"].startswith("dist/big: 2k (holes included) would pass")


def test_a_retrys_copy_replaces_the_previous_one_after_it(tmp_path):
    """Copies of one node run in order (the first one's answer comes late here); the later
    one's files are what is left."""
    backend = Exporting(
        {"/held/dist": [tar_of({"dist/one": b"1"}), tar_of({"dist/two": b"22"})],
         "/held/logs": tar_of({})}
    )  # fmt: skip
    volumes, _, _, plan, _ = produced(backend, tmp_path)
    first = SimpleNamespace(artifacts=None, violations=[])
    second = SimpleNamespace(artifacts=None, violations=[])
    target = tmp_path / "copies" / "make" / "dist"

    async def go():
        volumes.copy_in_background(plan.nodes["make"], first)
        volumes.copy_in_background(plan.nodes["make"], second)
        await volumes.finish()

    asyncio.run(go())
    assert first.artifacts[0]["files"] == 1 and second.artifacts[0]["bytes"] == 2
    assert sorted(p.name for p in target.iterdir()) == ["two"]


# --- reservations wait for what is on its way out -----------------------------------------

SERIAL = """
version: 1
name: serial
nodes:
  p1: {command: [x], outputs: {artifacts: [{name: a, path: /out}]}}
  p2: {needs: [p1], command: [x], outputs: {artifacts: [{name: b, path: /out}]}}
"""


class Slow(MemoryBackend):
    """Copies answer late (the engine streams); a copy of a removed volume fails."""

    def __init__(self) -> None:
        super().__init__()
        self.exported: list[str] = []

    async def export(self, container_id, path, consume):
        for _ in range(10):  # a yield at a time, so whatever else is due runs meanwhile
            await asyncio.sleep(0)
        name = next(v for v in self.volumes if v.endswith("-" + path.rsplit("/", 1)[1]))
        self.exported.append(name)
        if not any(c == container_id for c in self.containers):
            raise BackendError(f"no such container: {container_id}")
        return consume(io.BytesIO(tar_of({})))


def serial(backend: Slow, tmp_path: Path):
    plan, sandboxes = admitted(SERIAL)
    volumes = ArtifactVolumes(backend, dict(RUN), tmp_path / "copies", plan.nodes, CAP)

    async def register(spec):
        return await backend.create(spec)

    async def dispose(container_id):
        await backend.remove(container_id)

    async def produce(node: str, attempt: int):
        return await volumes.for_producer(
            plan.nodes[node], sandboxes[node], attempt, register, dispose
        )

    return volumes, plan, produce


def test_a_reservation_that_does_not_fit_waits_for_the_copies_and_releases_due(tmp_path):
    """p1's volume is copied (slowly) and nothing needs it: p2's reservation, which fits
    only once it is gone, waits for its copy and its release instead of failing."""
    backend = Slow()
    volumes, plan, produce = serial(backend, tmp_path)
    attempt = SimpleNamespace(artifacts=None, violations=[])

    async def go():
        await produce("p1", 1)
        volumes.copy_in_background(plan.nodes["p1"], attempt)
        volumes.node_finished("p1", retrying=False)
        mounts = await produce("p2", 1)
        await volumes.finish()
        return mounts

    mounts = asyncio.run(go())
    assert [m.volume for m in mounts] == ["sandbox-orch-r1-p2-1-b"]
    assert attempt.violations == [] and attempt.artifacts[0]["complete"] is True
    assert set(backend.volumes) == {"sandbox-orch-r1-p2-1-b"}


def test_a_cancelled_copy_does_not_fail_the_next_reservation(tmp_path):
    backend = Slow()
    volumes, plan, produce = serial(backend, tmp_path)

    async def go():
        await produce("p1", 1)
        volumes.copy_in_background(plan.nodes["p1"], SimpleNamespace(artifacts=None, violations=[]))
        volumes._copies["p1"].cancel()
        volumes.node_finished("p1", retrying=False)
        return await produce("p2", 1)

    assert [m.volume for m in asyncio.run(go())] == ["sandbox-orch-r1-p2-1-b"]


def test_a_retry_waits_for_the_previous_attempts_copy_before_removing_its_volumes(tmp_path):
    backend = Slow()
    volumes, plan, produce = serial(backend, tmp_path)
    attempt = SimpleNamespace(artifacts=None, violations=[])

    async def go():
        await produce("p1", 1)
        volumes.copy_in_background(plan.nodes["p1"], attempt)
        volumes.node_finished("p1", retrying=True)
        return await produce("p1", 2)

    assert [m.volume for m in asyncio.run(go())] == ["sandbox-orch-r1-p1-2-a"]
    assert attempt.violations == [] and attempt.artifacts[0]["complete"] is True
    assert backend.exported == ["sandbox-orch-r1-p1-1-a"]
    assert set(backend.volumes) == {"sandbox-orch-r1-p1-2-a"}


def test_a_retry_after_a_cancelled_copy_still_gets_its_volumes(tmp_path):
    backend = Slow()
    volumes, plan, produce = serial(backend, tmp_path)

    async def go():
        await produce("p1", 1)
        volumes.copy_in_background(plan.nodes["p1"], SimpleNamespace(artifacts=None, violations=[]))
        volumes._copies["p1"].cancel()
        return await produce("p1", 2)

    assert [m.volume for m in asyncio.run(go())] == ["sandbox-orch-r1-p1-2-a"]


def test_a_producer_that_left_nothing_to_copy_is_released_for_the_next_reservation(tmp_path):
    """p1 never started (no copy): its release is due, and p2's reservation waits for it."""
    backend = Slow()
    volumes, _, produce = serial(backend, tmp_path)

    async def go():
        await produce("p1", 1)
        volumes.node_finished("p1", retrying=False)
        return await produce("p2", 1)

    assert [m.volume for m in asyncio.run(go())] == ["sandbox-orch-r1-p2-1-b"]
    assert set(backend.volumes) == {"sandbox-orch-r1-p2-1-b"}


def test_five_numbers_are_enough(tmp_path):
    assert usage_of(Answering((0, b"100 60 1024 1000\n4096\n")), tmp_path) == Usage(
        100, 60, 1024, 1000, 4096
    )


def test_a_copy_of_host_volumes_is_held_to_the_volume_cap(tmp_path):
    backend = MemoryBackend(volume_root=tmp_path / "v")
    volumes, _, _, plan, _ = produced(backend, tmp_path)
    for key, held in list(volumes.current.items()):
        volumes.current[key] = dataclasses.replace(held, size=1024)
    (volumes.current[("make", "dist")].volume.host_path / "big").write_bytes(b"x" * 2048)
    attempt = SimpleNamespace(artifacts=None, violations=[])

    async def go():
        volumes.copy_in_background(plan.nodes["make"], attempt)
        await volumes.finish()

    asyncio.run(go())
    assert attempt.artifacts[0]["complete"] is False
    assert attempt.violations[0]["detail"].startswith("dist/big: 2k (holes included) would pass")


def test_a_cancelled_copy_does_not_stop_the_retrys_copy(tmp_path):
    backend = Exporting({"/held/dist": tar_of({"dist/a": b"1"}), "/held/logs": tar_of({})})
    volumes, _, _, plan, _ = produced(backend, tmp_path)
    first = SimpleNamespace(artifacts=None, violations=[])
    second = SimpleNamespace(artifacts=None, violations=[])

    async def go():
        volumes.copy_in_background(plan.nodes["make"], first)
        volumes._copies["make"].cancel()
        volumes.copy_in_background(plan.nodes["make"], second)
        await volumes.finish()

    asyncio.run(go())
    assert first.artifacts is None and second.artifacts[0]["files"] == 1


CONSUMED = """
version: 1
name: consumed
nodes:
  p1:
    command: [x]
    outputs: {artifacts: [{name: a, path: /out}, {name: spare, path: /spare}]}
  c: {needs: [p1], command: [x], inputs: [{from: p1/a, path: /in}]}
  p2: {needs: [p1], command: [x], outputs: {artifacts: [{name: b, path: /out}]}}
  both:
    needs: [p1, p2]
    command: [x]
    inputs: [{from: p1/a, path: /a}, {from: p2/b, path: /b}]
"""


def consumed(backend: MemoryBackend, tmp_path: Path, ceiling: int):
    plan, sandboxes = admitted(CONSUMED)
    volumes = ArtifactVolumes(backend, dict(RUN), tmp_path / "copies", plan.nodes, ceiling)
    registered = Registered()

    async def produce(node: str):
        return await volumes.for_producer(
            plan.nodes[node], sandboxes[node], 1, registered.register, registered.dispose
        )

    return volumes, plan, produce, registered


@pytest.mark.parametrize("store", ["host", "engine"])
def test_a_volume_a_consumer_may_still_mount_keeps_its_share_of_the_ceiling(tmp_path, store):
    """p1 is done but c has not run: p1/a stays; p1/spare is needed by no one. Host volumes
    go one by one, so p2 fits once spare is gone; a holder's go together, so p2 does not
    fit (and is told why) rather than waiting for ever."""
    root = tmp_path / "v" if store == "host" else None
    backend = MemoryBackend(volume_root=root)
    volumes, _, produce, registered = consumed(backend, tmp_path, 2 * CAP)

    async def go():
        await produce("p1")
        volumes.node_finished("p1", retrying=False)
        if store == "host":
            await asyncio.wait_for(produce("p2"), 30)
        else:
            with pytest.raises(ArtifactsRefused, match="artifacts_total"):
                await asyncio.wait_for(produce("p2"), 30)
        await volumes.finish()

    asyncio.run(go())
    left = {n for n in backend.volumes if not n.endswith("-ro")}
    if store == "host":
        assert left == {"sandbox-orch-r1-p1-1-a", "sandbox-orch-r1-p2-1-b"}
    else:
        assert left == {"sandbox-orch-r1-p1-1-a", "sandbox-orch-r1-p1-1-spare"}
    assert registered.disposed == []


@pytest.mark.parametrize("finished", [[], ["p1"]])
def test_a_holder_and_its_volumes_stay_until_all_of_them_are_unneeded(tmp_path, finished):
    """With nothing unneeded, or only p1/spare (c may still mount p1/a), a release asked
    for leaves the holder and every volume alone."""
    backend = MemoryBackend()
    volumes, _, produce, registered = consumed(backend, tmp_path, 4 * CAP)

    async def go():
        await produce("p1")
        for node in finished:
            volumes.node_finished(node, retrying=False)
        (group,) = volumes._groups
        await volumes._release(group, whole=False)

    asyncio.run(go())
    assert registered.disposed == [] and len(backend.volumes) == 3


def test_a_consumer_mounts_the_inputs_that_exist(tmp_path):
    """An input whose producer never ran has no volume; the others are still mounted."""
    volumes, plan, produce, _ = consumed(MemoryBackend(), tmp_path, 4 * CAP)

    async def go():
        await produce("p2")

    asyncio.run(go())
    assert asyncio.run(volumes.for_consumer(plan.nodes["both"])) == (
        VolumeMount("sandbox-orch-r1-p2-1-b-ro", "/b", read_only=False),
    )


def test_a_failed_removal_is_left_for_the_sweep_and_says_whose(tmp_path, caplog):
    """Once a removal failed, the group is left as it is (no retry per event): the run's
    sweep removes it, by label."""
    backend = MemoryBackend(volume_root=tmp_path / "v")
    volumes, _, produce, _ = consumed(backend, tmp_path, 4 * CAP)
    tried = []

    async def refuse(resource):
        tried.append(resource.id)
        raise BackendError("volume is in use")

    backend.remove_resource = refuse

    async def go():
        await produce("p1")
        volumes.node_finished("p1", retrying=False)  # p1/spare is due, and fails
        await asyncio.gather(*list(volumes._releases))
        volumes.node_finished("c", retrying=False)
        await volumes.finish()

    with caplog.at_level(logging.WARNING):
        asyncio.run(go())
    assert [r.getMessage() for r in caplog.records] == [
        "releasing artifact volumes of p1: volume is in use"
    ]
    assert tried == ["sandbox-orch-r1-p1-1-spare"]
    assert volumes.lifetimes.reserved == 2 * CAP and volumes._releases == set()


def test_released_volumes_are_removed_by_their_labels_and_forgotten(tmp_path):
    """Each volume goes (its view first) as soon as no one needs it; once all are gone the
    group is forgotten and the reservation given back."""
    backend = MemoryBackend(volume_root=tmp_path / "v")
    volumes, _, produce, _ = consumed(backend, tmp_path, 4 * CAP)
    removed = []
    remove = backend.remove_resource

    async def recorded(resource):
        removed.append(resource)
        await remove(resource)

    backend.remove_resource = recorded
    labels = {**RUN, "sandbox-orch.node": "p1"}

    async def go():
        await produce("p1")
        volumes.node_finished("p1", retrying=False)
        await asyncio.gather(*list(volumes._releases))
        assert removed == [Resource("volume", "sandbox-orch-r1-p1-1-spare", labels)]
        assert set(volumes.current) == {("p1", "a")} and len(volumes._groups) == 1
        for node in ("c", "p2", "both"):
            volumes.node_finished(node, retrying=False)
        await volumes.finish()

    asyncio.run(go())
    assert removed[1:] == [
        Resource("volume", "sandbox-orch-r1-p1-1-a-ro", labels),
        Resource("volume", "sandbox-orch-r1-p1-1-a", labels),
    ]
    assert volumes.current == {} and volumes._groups == [] and volumes.lifetimes.reserved == 0
    assert backend.volumes == {}


def test_finish_waits_past_a_cancelled_copy(tmp_path):
    backend = Exporting({"/held/dist": tar_of({}), "/held/logs": tar_of({})})
    volumes, _, _, plan, _ = produced(backend, tmp_path)

    async def go():
        volumes.copy_in_background(plan.nodes["make"], SimpleNamespace(artifacts=None))
        volumes._copies["make"].cancel()
        await volumes.finish()
        return volumes._copies["make"].cancelled()

    assert asyncio.run(go()) is True


def test_a_host_store_volume_carries_its_bind_a_view_read_only():
    from sandbox_orch.artifacts.volumes import _host_bind

    on_host = Volume("v", Path("/run/so/v"))
    assert _host_bind(on_host, "/out/d", False) == BindMount("/run/so/v", "/out/d", False)
    assert _host_bind(on_host, "/in/d") == BindMount("/run/so/v", "/in/d", True)
    assert _host_bind(Volume("v"), "/in/d") is None  # the engine's own: no bind
