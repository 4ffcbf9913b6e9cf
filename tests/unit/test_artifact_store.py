"""Artifacts kept on this host ("host" volume store): `copy_tree` reads a volume's files
directly and refuses what `extract` refuses; runs on the memory backend need no holder
and copy what the producer left; and the host store's guards (names, who may use it)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import socket
import stat
import tarfile
import threading
from pathlib import Path, PurePosixPath
from types import SimpleNamespace

import pytest

from sandbox_orch.artifacts import HOLDER_IMAGE, Budget, apparent_size, copy_tree, extract
from sandbox_orch.artifacts import copy as artifact_copy
from sandbox_orch.backend import BackendError, ContainerSpec, hostvolumes
from sandbox_orch.backend.memory import MemoryBackend, Outcome
from sandbox_orch.execution import NODE_LABEL
from sandbox_orch.mounts import BindMount, never_mountable
from sandbox_orch.orchestrator import preflight, run_plan
from sandbox_orch.store import HOME_ENV

from .helpers import admitted, default_policy

# --- copy_tree ---------------------------------------------------------------------------


def tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def written(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_copy_tree_matches_extract_of_the_same_files(tmp_path):
    """Both stores record the same bytes, files and digest for the same content."""
    files = {"a.txt": b"hello\n", "sub/b.bin": bytes(range(256)) * 9, "sub/deeper/empty": b""}
    source = tree(tmp_path / "volume", files)
    copied = copy_tree(source, tmp_path / "copy")

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(source, arcname="d")
    buffer.seek(0)
    extracted = extract(buffer, tmp_path / "extracted")

    assert copied.refused == [] and extracted.refused == []
    assert (copied.files, copied.bytes) == (extracted.files, extracted.bytes) == (3, 6 + 2304)
    assert copied.sha256 == extracted.sha256
    for name, data in files.items():
        assert (tmp_path / "copy" / name).read_bytes() == data
    assert dict(copied.digests)["a.txt"] == hashlib.sha256(b"hello\n").hexdigest()


def test_symlinks_are_refused_and_never_followed(tmp_path):
    outside = tmp_path / "outside"
    tree(outside, {"secret": b"do not copy"})
    source = tree(tmp_path / "volume", {"real": b"ok"})
    (source / "pw").symlink_to("/etc/passwd")
    (source / "root").symlink_to("/")
    (source / "dir").symlink_to(outside)  # a directory "through" a link: not entered
    found = copy_tree(source, tmp_path / "copy")
    assert written(tmp_path / "copy") == ["real"]
    reasons = dict(r.split(": ", 1) for r in found.refused)
    assert reasons == {
        "pw": "a symlink to '/etc/passwd', refused (only files and directories)",
        "root": "a symlink to '/', refused (only files and directories)",
        "dir": f"a symlink to '{outside}', refused (only files and directories)",
    }


def test_a_fifo_and_a_socket_are_refused_without_blocking(tmp_path):
    source = tree(tmp_path / "volume", {"sub/kept": b"kept"})
    os.mkfifo(source / "fifo")  # no writer: opening it for reading would block forever
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(source / "sub" / "sock"))
    try:
        done = threading.Event()
        result = []
        worker = threading.Thread(
            target=lambda: (result.append(copy_tree(source, tmp_path / "copy")), done.set())
        )
        worker.start()
        assert done.wait(30), "copy_tree blocked"
    finally:
        listener.close()
    (found,) = result
    assert sorted(found.refused) == [
        "fifo: a FIFO, refused (only files and directories)",
        "sub/sock: a socket, refused (only files and directories)",
    ]
    assert written(tmp_path / "copy") == ["sub", "sub/kept"]


def test_of_two_names_for_one_file_the_second_is_refused_as_a_hard_link(tmp_path):
    source = tree(tmp_path / "volume", {"a": b"once"})
    os.link(source / "a", source / "b")
    found = copy_tree(source, tmp_path / "copy")
    assert found.refused == ["b: a hard link to 'a', refused (only files and directories)"]
    assert (found.files, found.bytes) == (1, 4) and written(tmp_path / "copy") == ["a"]


def test_directories_past_the_depth_limit_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(artifact_copy, "MAX_DEPTH", 3)
    source = tree(tmp_path / "volume", {"1/2/3/4/deep": b"x", "1/shallow": b"y"})
    found = copy_tree(source, tmp_path / "copy")
    assert found.refused == ["1/2/3/: deeper than 3 directories, refused"]
    assert written(tmp_path / "copy") == ["1", "1/2", "1/shallow"]


def test_nothing_already_in_the_destination_is_overwritten(tmp_path):
    source = tree(tmp_path / "volume", {"a": b"new"})
    target = tree(tmp_path / "copy", {"a": b"old"})
    found = copy_tree(source, target)
    assert (target / "a").read_bytes() == b"old" and found.refused == ["a: File exists"]


MIB = 1024 * 1024


def disk_use(root: Path) -> tuple[int, int]:
    """(sum of st_size, bytes allocated) of everything below `root`."""
    entries = [p.lstat() for p in root.rglob("*")]
    return sum(e.st_size for e in entries), sum(e.st_blocks * 512 for e in entries)


@pytest.mark.parametrize("size", [64 * MIB, 1 << 40])
def test_a_sparse_file_past_the_budget_is_not_expanded_on_the_host(tmp_path, size):
    source = tree(tmp_path / "volume", {"a-small": b"fits"})
    with open(source / "b-sparse", "wb") as sparse:
        os.truncate(sparse.fileno(), size)  # no blocks at all, a huge apparent size
    os.link(source / "b-sparse", source / "c-link")  # and another name for it
    found = copy_tree(source, tmp_path / "copy", Budget(1 * MIB, 100))
    assert written(tmp_path / "copy") == ["a-small"]
    assert disk_use(tmp_path / "copy")[0] == 4
    assert not found.complete and found.stopped.startswith("b-sparse: ")
    assert (found.files, found.bytes) == (1, 4)


def test_a_sparse_file_within_the_budget_is_copied_as_what_it_reads(tmp_path):
    source = tmp_path / "volume"
    source.mkdir()
    with open(source / "sparse", "wb") as sparse:
        os.truncate(sparse.fileno(), 512 * 1024)
    found = copy_tree(source, tmp_path / "copy", Budget(1 * MIB, 100))
    assert found.complete and (found.files, found.bytes) == (1, 512 * 1024)
    assert disk_use(tmp_path / "copy")[0] <= 1 * MIB


def test_many_empty_files_and_directories_stop_at_the_entry_budget(tmp_path):
    source = tmp_path / "volume"
    for index in range(30):
        (source / f"d{index:02}").mkdir(parents=True)
        (source / f"f{index:02}").touch()
    found = copy_tree(source, tmp_path / "copy", Budget(1 * MIB, 25))
    assert len(written(tmp_path / "copy")) == 25
    assert not found.complete and "one entry more than the artifact may hold" in found.stopped


def test_apparent_size_counts_holes_and_each_inode_once(tmp_path):
    source = tree(tmp_path / "volume", {"sub/a": b"12345"})
    with open(source / "sparse", "wb") as sparse:
        os.truncate(sparse.fileno(), 64 * MIB)
    os.link(source / "sparse", source / "sub" / "link")
    directories = sum(p.lstat().st_size for p in (source / "sub",))
    assert apparent_size(source) == 64 * MIB + 5 + directories


# --- runs with host volumes (memory backend) ---------------------------------------------

HANDOFF = """
version: 1
name: handoff
nodes:
  make:
    command: [x]
    outputs: {artifacts: [{name: dist, path: /out}]}
  use:
    needs: [make]
    command: [x]
    inputs: [{from: make/dist, path: /in}]
"""


def test_a_run_with_host_volumes_starts_no_holder_and_copies_what_was_written(
    tmp_path, monkeypatch
):
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    plan, sandboxes = admitted(HANDOFF)
    volumes = tmp_path / "volumes"
    seen: dict[str, ContainerSpec] = {}

    def script(spec: ContainerSpec) -> Outcome:
        node = spec.labels[NODE_LABEL]
        seen[node] = spec
        if node == "make":  # the producer writes into its own volume
            (volume,) = spec.volumes
            (volumes / volume.volume / "app.bin").write_bytes(b"built")
        return Outcome()

    backend = MemoryBackend(script, volume_root=volumes)
    report = asyncio.run(
        run_plan(plan, default_policy(), sandboxes, backend, "r1", lambda e: None, asyncio.Event())
    )
    assert report.status.value == "succeeded", report.results
    (made,) = seen["make"].volumes
    (used,) = seen["use"].volumes
    # The consumer mounts the producer's read-only view (read-only at its source).
    assert (made.volume, made.read_only, used.volume, used.read_only) == (
        made.volume, False, f"{made.volume}-ro", False,
    )  # fmt: skip
    assert "sandbox-orch-r1-make-1-dist-ro" in [m.volume for m in seen["use"].volumes]
    assert all(c.spec.image != HOLDER_IMAGE for c in backend.containers.values())
    assert backend.containers == {} and backend.volumes == {} and list(volumes.iterdir()) == []
    (record,) = report.results["nodes"]["make"]["artifacts"]
    assert (record["files"], record["bytes"]) == (1, 5)
    assert Path(record["path"], "app.bin").read_bytes() == b"built"


@pytest.mark.parametrize(
    ("volume_root", "in_pod", "needs_holder"),
    [(None, False, True), (Path("v"), False, False), (None, True, True)],
)
def test_preflight_asks_for_the_holder_image_unless_volumes_are_on_the_host(
    volume_root, in_pod, needs_holder
):
    _, sandboxes = admitted(HANDOFF)
    backend = MemoryBackend(volume_root=volume_root, pod_volumes=in_pod)
    ids = asyncio.run(preflight(backend, default_policy(), sandboxes, artifacts=True))
    assert (HOLDER_IMAGE in ids) is needs_holder


# --- the "pod" store: the producer's own container holds its volumes ---------------------

PRODUCER = """
version: 1
name: pod-store
nodes:
  make:
    command: [x]
    outputs: {artifacts: [{name: dist, path: /out}, {name: logs, path: /logs}]}
  after:
    needs: [make]
    command: [x]
"""


def _pod_store_run(tmp_path, monkeypatch, workflow, script=None):
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    plan, sandboxes = admitted(workflow)
    backend = MemoryBackend(script, pod_volumes=True)
    created: dict[str, str] = {}  # node -> its container id
    create = backend.create

    async def recording(spec):
        container_id = await create(spec)
        created[spec.labels[NODE_LABEL]] = container_id
        return container_id

    backend.create = recording
    report = asyncio.run(
        run_plan(plan, default_policy(), sandboxes, backend, "r1", lambda e: None, asyncio.Event())
    )
    return report, backend, created


def test_pod_volumes_are_measured_and_copied_in_the_producer_which_goes_after_its_copy(
    tmp_path, monkeypatch
):
    report, backend, created = _pod_store_run(tmp_path, monkeypatch, PRODUCER)
    assert report.status.value == "succeeded", report.results
    assert set(created) == {"make", "after"}  # no holder of its own
    make = created["make"]
    ours = [call for call in backend.calls if call[1] == make]
    # each artifact measured, then each copied, in the producer's container; it is
    # removed once, after both copies
    assert ours == [("run_in", make)] * 2 + [("export", make)] * 2 + [("remove", make)]
    assert backend.containers == {} and backend.volumes == {}
    records = report.results["nodes"]["make"]["artifacts"]
    assert [r["name"] for r in records] == ["dist", "logs"]
    after = created["after"]  # no artifacts: the runner removes it, as on any store
    assert [c for c in backend.calls if c[1] == after] == [("remove", after)]


@pytest.mark.parametrize("in_pod", [True, False])
def test_only_a_pod_stores_producer_is_left_to_its_volumes(in_pod):
    """`holds` names the producer's container in the "pod" store, and nothing else: not
    another container, not an "engine" store's holder (the runner never sees those)."""
    from sandbox_orch.artifacts import ArtifactVolumes

    plan, sandboxes = admitted(PRODUCER)
    backend = MemoryBackend(pod_volumes=in_pod)
    volumes = ArtifactVolumes(
        backend, {"sandbox-orch.run": "r1"}, Path("unused"), plan.nodes, 2**40
    )

    async def register(spec):
        return "engine-holder"

    async def scenario():
        make = plan.nodes["make"]
        await volumes.for_producer(make, sandboxes["make"], 1, register, backend.remove)
        volumes.held_by("make", "producer")
        volumes.held_by("after", "other")  # no volumes of its own: nothing to hold
        return [volumes.holds(c) for c in ("producer", "other", "engine-holder")]

    held = asyncio.run(scenario())
    assert held == ([True, False, False] if in_pod else [False, False, False])
    holders = {v.holder for v in volumes.current.values()}
    assert holders == ({"producer"} if in_pod else {"engine-holder"})


def test_pod_volumes_of_a_failed_producer_are_copied_and_go_with_it(tmp_path, monkeypatch):
    def script(spec):
        return Outcome(exit_code=4) if spec.labels[NODE_LABEL] == "make" else Outcome()

    report, backend, created = _pod_store_run(tmp_path, monkeypatch, PRODUCER, script)
    assert report.results["nodes"]["make"]["status"] == "failed"
    make = created["make"]
    assert [c for c in backend.calls if c[1] == make][-3:] == [
        ("export", make), ("export", make), ("remove", make)
    ]  # fmt: skip
    assert backend.containers == {} and backend.volumes == {}


class PodWithFiles(MemoryBackend):
    """The "pod" store whose producers leave a file (app.bin) in each artifact, or
    whose copies fail (`broken`)."""

    def __init__(self, script=None, broken: bool = False) -> None:
        super().__init__(script, pod_volumes=True)
        self.broken = broken
        self.specs: dict[str, ContainerSpec] = {}  # node -> its container's spec
        self.ids: dict[str, str] = {}  # node -> its container's id

    async def create(self, spec):
        self.specs[spec.labels[NODE_LABEL]] = spec
        container_id = await super().create(spec)
        self.ids[spec.labels[NODE_LABEL]] = container_id
        self.calls.append(("create", spec.labels[NODE_LABEL]))
        return container_id

    async def export(self, container_id, path, consume):
        self.calls.append(("export", container_id))
        if self.broken:
            raise BackendError("the exec stream broke")
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            info = tarfile.TarInfo("dist/app.bin")
            info.size = 5
            tar.addfile(info, io.BytesIO(b"built"))
        archive.seek(0)
        return consume(archive)


def _pod_volumes(backend, tmp_path):
    from sandbox_orch.artifacts import ArtifactVolumes

    plan, sandboxes = admitted(HANDOFF)
    labels = {"sandbox-orch.run": "r1"}
    return plan, sandboxes, ArtifactVolumes(backend, labels, tmp_path, plan.nodes, 2**40)


def test_a_pod_store_consumer_mounts_the_host_copy_and_the_producer_goes_once_copied(tmp_path):
    """The producer's pod is not kept for its consumers: they get its copy on this host
    (which the backend delivers into their own pods), read-only."""
    backend = PodWithFiles()
    plan, sandboxes, volumes = _pod_volumes(backend, tmp_path)

    async def register(spec):
        raise AssertionError("the pod store starts no holder")

    async def scenario():
        make, use = plan.nodes["make"], plan.nodes["use"]
        await volumes.for_producer(make, sandboxes["make"], 1, register, backend.remove)
        volumes.held_by("make", "producer")
        volumes.copy_in_background(make, SimpleNamespace(violations=[]))
        volumes.node_finished("make", retrying=False)
        await volumes.finish()  # the copy, then the release it lets go
        assert ("remove", "producer") in backend.calls  # while `use` has not even started
        return await volumes.for_consumer(use)

    (mount,) = asyncio.run(scenario())
    copy = tmp_path / "make" / "dist"
    assert mount.volume == "sandbox-orch-r1-make-1-dist-ro"
    assert (mount.target, mount.read_only) == ("/in", False)  # read-only at its source
    assert mount.host_bind == BindMount(str(copy), "/in", True)
    assert (copy / "app.bin").read_bytes() == b"built"
    assert backend.volumes == {}


def test_a_retry_whose_copy_failed_is_not_taken_for_its_last_attempt_s(tmp_path):
    """The first attempt's copy was whole; the retry's failed (and removed the first's):
    the consumer is not run on what is left."""
    backend = PodWithFiles()
    plan, sandboxes, volumes = _pod_volumes(backend, tmp_path)

    async def scenario():
        make = plan.nodes["make"]
        for attempt in (1, 2):
            await volumes.for_producer(
                make, sandboxes["make"], attempt, backend.create, backend.remove
            )
            volumes.held_by("make", f"producer-{attempt}")
            volumes.copy_in_background(make, SimpleNamespace(violations=[]))
            await volumes.finish()
            backend.broken = True  # the retry's copy fails
        await volumes.for_consumer(plan.nodes["use"])

    with pytest.raises(BackendError, match="input make/dist: its copy to this host failed"):
        asyncio.run(scenario())
    assert not (tmp_path / "make" / "dist").exists()


def test_a_pod_store_consumer_waits_for_its_producer_s_copy(tmp_path):
    backend = PodWithFiles()
    plan, sandboxes, volumes = _pod_volumes(backend, tmp_path)
    order: list[str] = []

    async def scenario():
        make, use = plan.nodes["make"], plan.nodes["use"]
        await volumes.for_producer(make, sandboxes["make"], 1, backend.create, backend.remove)
        volumes.held_by("make", "producer")
        export = backend.export

        async def slow_export(container_id, path, consume):
            order.append("copy begins")
            await asyncio.sleep(0)  # the consumer asks meanwhile
            order.append("copy ends")
            return await export(container_id, path, consume)

        backend.export = slow_export
        volumes.copy_in_background(make, SimpleNamespace(violations=[]))
        await volumes.for_consumer(use)
        order.append("consumer mounts")
        await volumes.finish()

    asyncio.run(scenario())
    assert order == ["copy begins", "copy ends", "consumer mounts"]


def test_a_pod_store_consumer_whose_input_was_not_copied_errors_unrun(tmp_path, monkeypatch):
    backend = PodWithFiles(broken=True)
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    plan, sandboxes = admitted(HANDOFF)
    report = asyncio.run(
        run_plan(plan, default_policy(), sandboxes, backend, "r1", lambda e: None, asyncio.Event())
    )
    nodes = report.results["nodes"]
    assert nodes["use"]["status"] == "errored"
    assert "input make/dist: its copy to this host failed" in nodes["use"]["reason"]
    assert "use" not in backend.specs  # never created
    assert backend.containers == {} and backend.volumes == {}


def test_a_pod_store_run_hands_the_copy_to_its_consumer(tmp_path, monkeypatch):
    backend = PodWithFiles()
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    plan, sandboxes = admitted(HANDOFF)
    report = asyncio.run(
        run_plan(plan, default_policy(), sandboxes, backend, "r1", lambda e: None, asyncio.Event())
    )
    assert report.status.value == "succeeded", report.results
    (record,) = report.results["nodes"]["make"]["artifacts"]
    (mount,) = backend.specs["use"].volumes
    assert mount.host_bind == BindMount(record["path"], "/in", True)
    assert backend.calls.index(("export", backend.ids["make"])) < backend.calls.index(
        ("create", "use")
    )
    assert backend.containers == {} and backend.volumes == {}


# --- the host store's guards -------------------------------------------------------------


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../etc"])
def test_a_volume_path_is_one_component_under_the_root(name):
    with pytest.raises(ValueError):
        hostvolumes.path_of(name)


def test_host_volumes_need_a_local_socket():
    assert hostvolumes.unavailable(None) is not None


def test_host_volumes_need_root_and_an_engine_sharing_our_mounts(tmp_path):
    """Against a listener in this very process (same mount namespace): usable as root,
    refused otherwise."""
    path = str(tmp_path / "engine.sock")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen(1)
        why = hostvolumes.unavailable(path)
    if os.geteuid() == 0:
        assert why is None
    else:
        assert why == "mounting needs root"


def test_no_policy_can_mount_the_host_volumes():
    for mode in ("ro", "rw"):
        assert never_mountable(hostvolumes.ROOT / "sandbox-orch-x", mode) is not None
        assert never_mountable(hostvolumes.ROOT.parent, mode) is not None


def test_an_artifact_whose_use_cannot_be_measured_fails_its_node(tmp_path, monkeypatch):
    """Fail closed: a holder that cannot answer (`stat -f`, `du`) does not pass the node."""
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    plan, sandboxes = admitted(HANDOFF)
    backend = MemoryBackend()  # the "engine" store: the holder is asked

    async def broken(container_id: str, argv: list[str]) -> tuple[int, bytes]:
        return 1, b""

    backend.run_in = broken
    report = asyncio.run(
        run_plan(plan, default_policy(), sandboxes, backend, "r1", lambda e: None, asyncio.Event())
    )
    node = report.results["nodes"]["make"]
    assert node["status"] == "failed", node
    assert node["reason"] == (
        "artifact 'dist': its use could not be measured (the holder's `stat -f` and `du` "
        "exited 1, printing b'')"
    )
    assert report.results["nodes"]["use"]["status"] == "skipped"


# --- copy_tree: what each refusal says, modes, errors ------------------------------------


@pytest.mark.parametrize(
    ("mode", "kind"),
    [
        (stat.S_IFIFO | 0o600, "a FIFO"),
        (stat.S_IFCHR | 0o600, "a device"),
        (stat.S_IFBLK | 0o600, "a device"),
        (stat.S_IFSOCK | 0o600, "a socket"),
        (0o170000, "not a regular file"),  # a file type this system does not have
    ],
)
def test_each_kind_of_special_file_is_named(mode, kind):
    assert artifact_copy._mode_kind(mode) == kind


def test_a_device_node_is_refused_never_opened(tmp_path):
    source = tree(tmp_path / "volume", {"kept": b"k"})
    os.mknod(source / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    found = copy_tree(source, tmp_path / "copy")
    assert found.refused == ["null: a device, refused (only files and directories)"]
    assert written(tmp_path / "copy") == ["kept"]


def test_copies_get_fixed_modes(tmp_path):
    source = tree(tmp_path / "volume", {"sub/f": b"x"})
    (source / "sub" / "f").chmod(0o4777)
    (source / "sub").chmod(0o777)
    old = os.umask(0)
    try:
        copy_tree(source, tmp_path / "copy")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "copy" / "sub").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "copy" / "sub" / "f").stat().st_mode) == 0o644


def test_a_file_replaced_between_listing_and_opening_is_refused(tmp_path):
    """What is opened must be the inode that was listed (and checked to be a file)."""
    source = tree(tmp_path / "volume", {"a": b"listed", "b": b"opened"})
    copy = artifact_copy._TreeCopy(artifact_copy._Writer(tmp_path / "copy", Budget(MIB, 10)))
    (tmp_path / "copy").mkdir()
    root = os.open(source, os.O_RDONLY | os.O_DIRECTORY)
    try:
        listed = os.stat("a", dir_fd=root, follow_symlinks=False)
        copy.file(root, "b", listed, PurePosixPath("a"))
        copy.file(root, "gone", listed, PurePosixPath("gone"))
    finally:
        os.close(root)
    assert copy.writer.result.refused == [
        "a: replaced while being copied, refused",
        "gone: No such file or directory",
    ]
    assert written(tmp_path / "copy") == []


def test_a_directory_that_cannot_be_opened_is_refused(tmp_path):
    source = tree(tmp_path / "volume", {"x": b""})
    copy = artifact_copy._TreeCopy(artifact_copy._Writer(tmp_path / "copy", Budget(MIB, 10)))
    (tmp_path / "copy").mkdir()
    root = os.open(source, os.O_RDONLY | os.O_DIRECTORY)
    try:
        copy.subdirectory(root, "x", PurePosixPath("d/x"), 2)  # a file, not a directory
    finally:
        os.close(root)
    assert copy.writer.result.refused == [
        "d/x/: No such file or directory",  # its parent was never made here
        "d/x/: Not a directory",
    ]


def test_a_file_with_one_name_is_not_remembered(tmp_path):
    """Only inodes with several names can be met again; the others are not kept."""
    source = tree(tmp_path / "volume", {"a": b"1", "b": b"2"})
    os.link(source / "b", source / "c")
    copy = artifact_copy._TreeCopy(artifact_copy._Writer(tmp_path / "copy", Budget(MIB, 10)))
    (tmp_path / "copy").mkdir()
    root = os.open(source, os.O_RDONLY | os.O_DIRECTORY)
    try:
        copy.directory(root, PurePosixPath("."), 1)
    finally:
        os.close(root)
    assert list(copy.seen.values()) == ["b"]


def test_copy_tree_reads_each_file_unbuffered_in_chunks(tmp_path):
    data = bytes(range(256)) * (5 * artifact_copy.CHUNK // 512)
    source = tree(tmp_path / "volume", {"big": data})
    found = copy_tree(source, tmp_path / "copy", Budget(len(data), 10))
    assert found.complete and found.bytes == len(data)
    assert (tmp_path / "copy" / "big").read_bytes() == data


def test_apparent_size_stops_at_the_depth_the_copy_takes(tmp_path, monkeypatch):
    monkeypatch.setattr(artifact_copy, "MAX_DEPTH", 3)
    files = {"1/a": b"1", "1/2/b": b"22", "1/2/3/c": b"333", "1/2/3/4/d": b"4444"}
    source = tree(tmp_path / "volume", files)
    # as copy_tree with MAX_DEPTH 3: "1" and "1/2" and their files; "1/2/3" is refused
    dirs = sum((source / d).lstat().st_size for d in ("1", "1/2", "1/2/3"))
    assert apparent_size(source) == dirs + 1 + 2


def test_apparent_size_skips_what_cannot_be_listed(tmp_path):
    assert apparent_size(tmp_path / "missing") == 0


def test_copy_tree_stops_at_the_entry_past_the_budget_by_name(tmp_path):
    source = tree(tmp_path / "volume", {"a": b"", "b": b"", "c": b""})
    found = copy_tree(source, tmp_path / "copy", Budget(MIB, 2))
    assert found.stopped.startswith("c: one entry more than the artifact may hold (1m, 2 ")
    assert written(tmp_path / "copy") == ["a", "b"]


def test_apparent_size_does_not_follow_symlinks(tmp_path):
    big = tmp_path / "big"
    with open(big, "wb") as sparse:
        os.truncate(sparse.fileno(), 64 * MIB)
    source = tmp_path / "volume"
    source.mkdir()
    (source / "link").symlink_to(big)
    assert apparent_size(source) == len(str(big))  # the link's own size: its target's name


def test_apparent_size_goes_on_past_a_directory_it_cannot_list(tmp_path, monkeypatch):
    source = tree(tmp_path / "volume", {"a/x": b"12", "b/y": b"345", "c/z": b"6789"})
    scandir = os.scandir

    def refusing(path):  # in name order, so "b" is walked before "a"
        if Path(path).name == "b":
            raise PermissionError(13, "Permission denied")
        return sorted(scandir(path), key=lambda entry: entry.name)

    monkeypatch.setattr(os, "scandir", refusing)
    dirs = sum((source / d).lstat().st_size for d in "abc")
    assert apparent_size(source) == dirs + 2 + 4
