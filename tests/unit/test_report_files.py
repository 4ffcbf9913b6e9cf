"""The run's own report files (--results, --junit) are never placed where a node of the
run sees them: a node would read the last run's report there (every node's outputs and
reasons) and, read-write, could plant one in its place. Refused before anything starts,
naming the file and the mount; the run store inside a mount is masked, so a report
there is not seen. Through the real command line: refused before any engine is asked."""

from __future__ import annotations

import pytest

from sandbox_orch.admission import check_report_files
from sandbox_orch.errors import InputRefused, Problem
from sandbox_orch.mounts import BindMount
from sandbox_orch.sandbox import Sandbox
from tests.conftest import cli


def sandbox(*mounts: BindMount) -> Sandbox:
    return Sandbox(image="i", user="1:1", oci_runtime="runc", cpus=1, memory=1, memory_ceiling=1,
                   pids=1, timeout=1, output_limit=1, artifact_limit=1, tmpfs={}, mounts=mounts)  # fmt: skip


@pytest.fixture
def layout(tmp_path):
    (tmp_path / "work" / "sub").mkdir(parents=True)
    (tmp_path / "work" / ".sandbox-orch").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "work" / "sub")
    mount = BindMount(str(tmp_path / "work"), "/w", True, ("/w/.sandbox-orch",))
    return tmp_path, {"n": sandbox(mount)}


@pytest.mark.parametrize(
    "where", ["work/r.json", "work/sub/new/r.json", "link/r.json", "work/sub/../r.xml"]
)
def test_a_report_inside_a_mount_is_refused_naming_both(layout, where):
    root, sandboxes = layout
    path = root / where
    with pytest.raises(InputRefused) as refused:
        check_report_files({"--results": None, "--junit": path}, sandboxes)
    (problem,) = refused.value.problems
    assert problem.file == str(path)
    assert problem.message == (
        f"--junit lies inside what a node sees: node 'n' mounts {root / 'work'}; write it elsewhere"
    )


@pytest.mark.parametrize("where", ["r.json", "work-sibling/r.json", "work/.sandbox-orch/r.json"])
def test_a_report_outside_every_mount_or_in_a_masked_store_is_fine(layout, where):
    root, sandboxes = layout
    check_report_files({"--results": root / where}, sandboxes)


def test_a_report_inside_the_workspace_single_copies_in_is_refused(tmp_path):
    with pytest.raises(InputRefused, match=r"the workspace .* is copied into the node"):
        check_report_files({"--results": tmp_path / "r.json"}, {}, tmp_path)
    check_report_files({"--results": tmp_path.parent / "r.json"}, {}, tmp_path)


@pytest.mark.parametrize("option", ["--results", "--junit"])
def test_run_refuses_it_through_the_command_line(tmp_path, option):
    workflow = tmp_path / "wf.yaml"
    workflow.write_text(
        "version: 1\nname: x\nnodes:\n  a: {command: [x], mounts: [{source: ., target: /w}]}\n"
    )
    report = tmp_path / "out" / "report"
    store = tmp_path / "store"
    env = {"SANDBOX_ORCH_HOME": str(store)}
    proc = cli("run", str(workflow), "--ci", option, str(report), env=env, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (
        f"{report}: {option} lies inside what a node sees: node 'a' mounts {tmp_path.resolve()}; "
        "write it elsewhere"
    )
    assert not store.exists()  # no run was even recorded


def test_what_is_not_a_regular_file_in_a_reports_place_is_refused_with_every_other(layout):
    """Each option is judged: a directory (or a path through a file) in one report's place
    is refused, and the next option is still checked; a regular file there is replaced."""
    root, sandboxes = layout
    (root / "a-file").write_text("")
    (root / "old.json").write_text("{}")
    files = {
        "--results": root / "work",
        "--junit": root / "a-file" / "r.xml",
        "--other": root / "old.json",
        "--last": root / "work" / "r.json",
    }
    with pytest.raises(InputRefused) as refused:
        check_report_files(files, sandboxes)
    assert refused.value.problems == [
        Problem(str(root / "work"), None, "", "--results: not a regular file (a directory)"),
        Problem(str(root / "a-file" / "r.xml"), None, "", "--junit: cannot write: Not a directory"),
        Problem(
            str(root / "work" / "r.json"),
            None,
            "",
            f"--last lies inside what a node sees: node 'n' mounts {root / 'work'}; "
            "write it elsewhere",
        ),
    ]
