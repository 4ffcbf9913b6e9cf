"""CI reports from a results document: JUnit XML, GitHub workflow commands, step summary."""

from __future__ import annotations

import copy
import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from sandbox_orch.reports import (
    escape_data,
    escape_property,
    github_annotations,
    github_step_summary,
    in_github_actions,
    junit_xml,
)

# -- a results document as build_results writes it (CONTRACT 6) -----------------------


def node_doc(status: str = "succeeded", **fields: Any) -> dict[str, Any]:
    ran = status not in ("skipped",)
    exit_code = {"succeeded": 0, "failed": 1}.get(status) if ran else None
    reason = {
        "succeeded": None,
        "failed": "exited with code 1",
        "timed_out": "timed out after 120s",
        "errored": "image sandbox-orch/python: no such image",
        "skipped": "need 'build' failed",
        "cancelled": "run interrupted",
    }.get(status)
    node = {
        "status": status,
        "exit_code": exit_code,
        "attempts": 1 if ran else 0,
        "started_at": "2026-11-25T01:03:49.794Z" if ran else None,
        "finished_at": "2026-11-25T01:03:50.086Z" if ran else None,
        "duration_s": 0.292 if ran else None,
        "reason": reason,
        "needs": [],
        "when": None,
        "condition_result": None,
        "skip_reason": reason if status == "skipped" else None,
        "runtime": "shell",
        "image": "sandbox-orch/shell",
        "image_id": "sha256:" + "1" * 64,
        "outputs": {},
        "stdout_tail": f"{status} out\n" if ran else "",
        "stderr_tail": f"{status} err\n" if ran else "",
        "output_bytes": {"stdout": 10, "stderr": 10, "stdout_dropped": 0, "stderr_dropped": 0},
        "oom_killed": False,
        "usage": None,
        "artifacts": [],
        "violations": [],
        "attempt_details": [],
        "sandbox": {"oci_runtime": "runc", "user": "10001:10001", "network": "none"},
    }
    node.update(fields)
    return node


def results_doc(
    nodes: dict[str, dict[str, Any]],
    order: list[str] | None = None,
    workflow: str = "build-and-review",
    status: str = "failed",
) -> dict[str, Any]:
    order = order or list(nodes)
    counts = {s: 0 for s in ("succeeded", "failed", "timed_out", "errored", "skipped", "cancelled")}
    for node in nodes.values():
        counts[node["status"]] = counts.get(node["status"], 0) + 1
    return {
        "schema": "sandbox-orch/run-result@1",
        "run_id": "20261125t010349-e10344",
        "status": status,
        "workflow": {"name": workflow, "path": "ci/wf.yaml", "sha256": "a" * 64},
        "policy": {"name": "default", "path": "policies/default.yaml", "sha256": "b" * 64},
        "started_at": "2026-11-25T01:03:49.786Z",
        "finished_at": "2026-11-25T01:03:52.387Z",
        "duration_s": 2.601,
        "graph": {
            "nodes": order,
            "edges": [{"from": order[0], "to": n, "allow_failure": False} for n in order[1:]],
        },
        "nodes": nodes,
        "totals": {**counts, "usage": {"input_tokens": 0, "output_tokens": 0, "cost_usd": 0}},
    }


STATUSES = ["succeeded", "failed", "timed_out", "errored", "skipped", "cancelled"]


@pytest.fixture
def every_status() -> dict[str, Any]:
    # Graph order differs from both dict order and name order.
    nodes = {f"n-{s}": node_doc(s) for s in STATUSES}
    order = ["n-succeeded", "n-timed_out", "n-failed", "n-skipped", "n-errored", "n-cancelled"]
    return results_doc(nodes, order)


def parse(results: dict[str, Any], **kwargs: Any) -> ET.Element:
    text = junit_xml(results, **kwargs)
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    return ET.fromstring(text.encode("utf-8"))


def cases(root: ET.Element) -> dict[str, ET.Element]:
    return {case.get("name"): case for case in root.iter("testcase")}


def props(element: ET.Element) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    block = element.find("properties")
    for prop in [] if block is None else block.findall("property"):
        found.setdefault(prop.get("name"), []).append(prop.get("value"))
    return found


# -- JUnit XML ------------------------------------------------------------------------


def test_junit_counts_and_suite_attributes(every_status):
    root = parse(every_status)
    assert root.tag == "testsuites"
    [suite] = root.findall("testsuite")
    assert suite.get("name") == "build-and-review"
    assert (
        suite.get("tests"),
        suite.get("failures"),
        suite.get("errors"),
        suite.get("skipped"),
    ) == (
        "6",
        "2",
        "1",
        "2",
    )
    assert suite.get("time") == "2.601"
    assert suite.get("timestamp") == "2026-11-25T01:03:49.786Z"
    assert {k: root.get(k) for k in ("tests", "failures", "errors", "skipped")} == {
        "tests": "6",
        "failures": "2",
        "errors": "1",
        "skipped": "2",
    }


def test_junit_testcases_follow_graph_order(every_status):
    root = parse(every_status)
    names = [case.get("name") for case in root.iter("testcase")]
    assert names == every_status["graph"]["nodes"]
    assert {case.get("classname") for case in root.iter("testcase")} == {
        "sandbox-orch.build-and-review"
    }


def test_junit_each_status_has_its_element(every_status):
    by_name = cases(parse(every_status))

    ok = by_name["n-succeeded"]
    assert [child.tag for child in ok if child.tag != "properties"] == ["system-out", "system-err"]
    assert ok.find("system-out").text == "succeeded out\n"
    assert ok.get("time") == "0.292"

    for status in ("failed", "timed_out"):
        case = by_name[f"n-{status}"]
        [failure] = case.findall("failure")
        assert failure.get("type") == status
        assert failure.get("message") == every_status["nodes"][f"n-{status}"]["reason"]
        assert failure.text == f"{status} err\n"
        assert case.find("system-out").text == f"{status} out\n"
        assert case.find("system-err") is None  # the stderr tail is the failure's text
        assert case.find("error") is None and case.find("skipped") is None

    errored = by_name["n-errored"]
    [error] = errored.findall("error")
    assert error.get("type") == "errored"
    assert error.get("message") == "image sandbox-orch/python: no such image"
    assert errored.find("failure") is None

    skipped = by_name["n-skipped"]
    assert skipped.find("skipped").get("message") == "need 'build' failed"
    assert skipped.get("time") == "0.000"  # never ran: duration_s is null
    assert skipped.find("system-out") is None

    cancelled = by_name["n-cancelled"]
    assert cancelled.find("skipped").get("message") == "cancelled: run interrupted"
    assert cancelled.find("failure") is None and cancelled.find("error") is None


def test_junit_run_properties_include_run_id_and_results_path(every_status):
    path = ".sandbox-orch/runs/20261125t010349-e10344/results.json"
    suite = parse(every_status, results_path=path).find("testsuite")
    found = props(suite)
    assert found["run_id"] == ["20261125t010349-e10344"]
    assert found["results_path"] == [path]
    assert found["run_status"] == ["failed"]
    assert found["workflow_sha256"] == ["a" * 64]
    assert found["policy"] == ["default"]
    assert "results_path" not in props(parse(every_status).find("testsuite"))


def test_junit_node_properties_carry_violations():
    nodes = {
        "fetch": node_doc(
            "failed",
            violations=[
                {"kind": "egress", "detail": "connect to evil.example:443 refused"},
                {"kind": "artifact", "detail": "/out/x is a symlink"},
            ],
        )
    }
    case = cases(parse(results_doc(nodes)))["fetch"]
    found = props(case)
    assert found["violation"] == [
        "egress: connect to evil.example:443 refused",
        "artifact: /out/x is a symlink",
    ]
    assert found["exit_code"] == ["1"] and found["runtime"] == ["shell"]


HOSTILE = "a < b && c > d \"quoted\" 'single' ]]> <!-- --> <![CDATA[x]]> &amp; \x00nul \x1b[31mred\x1b[0m \x0bvt \ufffe \ud800 end"
HOSTILE_KEPT = (
    "a < b && c > d \"quoted\" 'single' ]]> <!-- --> <![CDATA[x]]> &amp; nul [31mred[0m vt   end"
)


def test_junit_escapes_markup_and_strips_what_xml_cannot_carry():
    nodes = {
        "evil": node_doc(
            "failed",
            reason=HOSTILE,
            stdout_tail="out: " + HOSTILE + "\n",
            stderr_tail="err: " + HOSTILE,
        ),
    }
    text = junit_xml(results_doc(nodes, workflow='wf "<&>" \x01'))
    text.encode("utf-8")  # no lone surrogate survives
    assert "\x00" not in text and "\x1b" not in text
    root = ET.fromstring(text.encode("utf-8"))
    case = cases(root)["evil"]
    failure = case.find("failure")
    assert failure.get("message") == HOSTILE_KEPT
    assert failure.text == "err: " + HOSTILE_KEPT
    assert case.find("system-out").text == "out: " + HOSTILE_KEPT + "\n"
    assert root.find("testsuite").get("name") == 'wf "<&>" '
    assert case.get("classname") == 'sandbox-orch.wf "<&>" '


def test_junit_keeps_tab_newline_and_non_ascii():
    tail = "col1\tcol2\nzeile ü 漢字 🚀\n"
    root = parse(results_doc({"n": node_doc("succeeded", stdout_tail=tail)}))
    assert cases(root)["n"].find("system-out").text == tail


def test_junit_binary_output_decoded_with_replacement_is_fine():
    binary = bytes(range(256)).decode("utf-8", errors="replace")
    root = parse(results_doc({"n": node_doc("errored", stderr_tail=binary)}))
    text = cases(root)["n"].find("error").text
    # Control characters gone; the CR turned LF, as any XML parser would make it.
    assert text == re.sub("[\x00-\x08\x0b\x0c\x0e-\x1f]", "", binary).replace("\r", "\n")


def test_junit_a_megabyte_tail_is_fine():
    tail = ("x" * 1023 + "\n") * 1024
    root = parse(results_doc({"big": node_doc("failed", stderr_tail=tail)}))
    assert cases(root)["big"].find("failure").text == tail


def test_junit_an_unfinished_node_is_never_a_pass():
    root = parse(results_doc({"stuck": node_doc("running", duration_s=None)}))
    error = cases(root)["stuck"].find("error")
    assert error is not None and error.get("type") == "running"
    assert root.find("testsuite").get("errors") == "1"


def test_junit_skipped_without_skip_reason_uses_reason():
    node = node_doc("skipped", skip_reason=None, reason="condition is false: failure()")
    root = parse(results_doc({"notify": node}))
    assert cases(root)["notify"].find("skipped").get("message") == "condition is false: failure()"


def test_junit_of_a_real_shaped_results_read_back_from_json(every_status, tmp_path):
    import json

    path = tmp_path / "results.json"
    path.write_text(json.dumps(every_status))
    again = json.loads(path.read_text())
    assert junit_xml(again, results_path=path) == junit_xml(every_status, results_path=str(path))


# -- GitHub workflow commands ----------------------------------------------------------

_COMMAND = re.compile(r"^::([^\s:]+)(?: ([^:]*))?::(.*)$")


def run_like_github(lines: list[str]) -> list[tuple[str, str, str]]:
    """The commands a GitHub runner would act on, reading the printed lines: lines split
    on CR/LF, and nothing processed between ::stop-commands::TOKEN and ::TOKEN::."""
    printed = "".join(line + "\n" for line in lines)
    acted: list[tuple[str, str, str]] = []
    stop_token = None
    for line in re.split(r"\r\n|\r|\n", printed):
        match = _COMMAND.match(line.strip())
        if not match:
            continue
        command, properties, data = match.group(1), match.group(2) or "", match.group(3)
        if stop_token is not None:
            if command.lower() == stop_token.lower():
                stop_token = None
            continue
        if command == "stop-commands":
            stop_token = data
            continue
        acted.append((command, properties, data))
    assert stop_token is None, "commands were left stopped"
    return acted


def test_github_groups_every_node_in_graph_order(every_status):
    lines = github_annotations(every_status)
    assert all("\n" not in line and "\r" not in line for line in lines)
    groups = [line for line in lines if line.startswith("::group::")]
    assert groups == [
        f"::group::{name} ({every_status['nodes'][name]['status']})"
        for name in every_status["graph"]["nodes"]
    ]
    assert lines.count("::endgroup::") == len(groups)


def test_github_wraps_each_group_in_a_fresh_stop_commands_block(every_status):
    lines = github_annotations(every_status)
    tokens = [line.removeprefix("::stop-commands::") for line in lines if "stop-commands" in line]
    assert len(tokens) == 6 and len(set(tokens)) == 6
    assert all(re.fullmatch(r"[0-9a-f]{32}", token) for token in tokens)
    first = lines.index("::group::n-succeeded (succeeded)")
    block = lines[first : lines.index("::endgroup::", first) + 1]
    token = tokens[0]
    assert block[1] == f"::stop-commands::{token}" and block[-2] == f"::{token}::"
    assert "--- stdout (tail) ---" in block and "succeeded out" in block
    assert "--- stderr (tail) ---" in block and "succeeded err" in block
    # a new token each time: output of a node cannot learn it from an earlier run
    assert not set(tokens) & {
        line.removeprefix("::stop-commands::")
        for line in github_annotations(every_status)
        if "stop-commands" in line
    }


def test_github_errors_for_failed_timed_out_and_errored_only(every_status):
    acted = run_like_github(github_annotations(every_status))
    errors = [(props, data) for command, props, data in acted if command == "error"]
    assert errors == [
        ("title=build-and-review%3A n-timed_out timed_out", "timed out after 120s"),
        ("title=build-and-review%3A n-failed failed", "exited with code 1"),
        (
            "title=build-and-review%3A n-errored errored",
            "image sandbox-orch/python: no such image",
        ),
    ]
    assert {command for command, _, _ in acted} == {"group", "endgroup", "error"}


INJECTION = "\n".join(
    [
        "::set-env name=X::y",
        "::add-mask::hunter2",
        "::endgroup::",
        "::error title=fake::all good, trust me",
        "::stop-commands::mine",
        "::mine::",
        "::set-output name=a::b",
        "  ::add-path::/tmp/evil",
        "harmless\r::set-output name=c::d",
        "::" + "0" * 32 + "::",
        "::warning::%0A::set-env name=Z::1",
    ]
)


def test_github_node_output_cannot_inject_workflow_commands():
    nodes = {
        "build": node_doc("succeeded", stdout_tail=INJECTION + "\n"),
        "test": node_doc(
            "failed", stderr_tail=INJECTION, reason="parse error near\n::set-env name=R::1"
        ),
    }
    lines = github_annotations(results_doc(nodes))
    acted = run_like_github(lines)
    assert acted == [
        ("group", "", "build (succeeded)"),
        ("endgroup", "", ""),
        ("group", "", "test (failed)"),
        ("endgroup", "", ""),
        (
            "error",
            "title=build-and-review%3A test failed",
            "parse error near%0A::set-env name=R::1 (exit code 1)",
        ),
    ]
    # The output itself is still shown, line by line, inside the block.
    assert "::add-mask::hunter2" in lines and "::set-env name=X::y" in lines


def test_github_escapes_data_and_properties():
    assert escape_data("100% done\r\nnext") == "100%25 done%0D%0Anext"
    assert escape_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A"
    nodes = {"deploy": node_doc("failed", reason="50% of 2,3: bad\nline two")}
    lines = github_annotations(results_doc(nodes, workflow="team: a,b"))
    [error] = [line for line in lines if line.startswith("::error")]
    assert error == (
        "::error title=team%3A a%2Cb%3A deploy failed::50%25 of 2,3: bad%0Aline two (exit code 1)"
    )


def test_github_warns_about_sandbox_violations():
    nodes = {
        "fetch": node_doc(
            "succeeded", violations=[{"kind": "egress", "detail": "evil.example:443, refused"}]
        )
    }
    acted = run_like_github(github_annotations(results_doc(nodes, status="succeeded")))
    assert ("warning", "title=build-and-review%3A fetch succeeded",
            "1 sandbox violation(s): egress: evil.example:443, refused") in acted  # fmt: skip


def test_github_node_without_output_still_has_a_closed_block():
    lines = github_annotations(results_doc({"s": node_doc("skipped")}))
    assert lines[0] == "::group::s (skipped)"
    assert lines[-1] == "::endgroup::"
    assert "reason: need 'build' failed" in lines
    assert run_like_github(lines) == [("group", "", "s (skipped)"), ("endgroup", "", "")]


def test_in_github_actions():
    assert in_github_actions({"GITHUB_ACTIONS": "true"})
    assert not in_github_actions({"GITHUB_ACTIONS": "false"})
    assert not in_github_actions({})


# -- step summary ----------------------------------------------------------------------


def split_row(row: str) -> list[str]:
    """Cells of a GFM table row: split on pipes that are not backslash-escaped."""
    assert row.startswith("| ") and row.endswith(" |")
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", row[1:-1])]


def table_rows(summary: str) -> list[list[str]]:
    rows = [line for line in summary.splitlines() if line.startswith("|")]
    assert rows[1] == "|---|---|---|---|---|"
    return [split_row(row) for row in rows[:1] + rows[2:]]


def test_step_summary_one_row_per_node_in_graph_order(every_status):
    summary = github_step_summary(every_status)
    header, *rows = table_rows(summary)
    assert header == ["node", "status", "duration", "exit code", "reason"]
    assert [row[0].replace("\\", "") for row in rows] == every_status["graph"]["nodes"]
    failed = rows[2]
    assert failed[1].endswith("failed") and failed[2] == "0.29s" and failed[3] == "1"
    assert failed[4] == "exited with code 1"
    skipped = rows[3]
    assert skipped[2] == "" and skipped[3] == ""
    assert "20261125t010349\\-e10344" in summary


def test_step_summary_escapes_pipes_markup_and_line_breaks():
    reason = "a|b | c\nd <img src=x onerror=alert(1)> ![t](http://evil/x.png) `code` \x00"
    nodes = {"lint": node_doc("failed", reason=reason)}
    summary = github_step_summary(results_doc(nodes))
    [row] = table_rows(summary)[1:]
    assert len(row) == 5
    cell = row[4]
    assert "a\\|b \\| c d" in cell
    assert "<img" not in cell and "&lt;img" in cell
    assert "![" not in cell and "\\!\\[t\\]\\(" in cell
    assert "`" not in cell.replace("\\`", "")
    assert "\x00" not in summary


def test_step_summary_cuts_long_reasons():
    nodes = {"n": node_doc("failed", reason="x" * 5000)}
    [row] = table_rows(github_step_summary(results_doc(nodes)))[1:]
    assert len(row[4]) == 300 and row[4].endswith("…")


def test_reports_do_not_change_the_results(every_status):
    before = copy.deepcopy(every_status)
    junit_xml(every_status, results_path="r.json")
    github_annotations(every_status)
    github_step_summary(every_status)
    assert every_status == before


def test_junit_carriage_returns_in_text_are_line_feeds_and_kept_in_attributes():
    node = node_doc("failed", reason="one\rtwo", stderr_tail="10%\r50%\r100%\r\ndone\n")
    case = cases(parse(results_doc({"p": node})))["p"]
    assert case.find("failure").text == "10%\n50%\n100%\ndone\n"
    assert case.find("failure").get("message") == "one\rtwo"
