"""Reports for CI, made from a results document (CONTRACT 6). Pure: results in, text out.

Everything here reads the dict that `results.build_results` makes (or a results.json
read back with `json.load`) and returns text; nothing reads files or the clock, nothing
writes, and nothing but ``in_github_actions`` looks at the environment. The results
dict is never changed. The only non-determinism is the random stop-commands token in
``github_annotations``. The caller (cli/workflows.py) decides where the text goes.

Wiring (for cli/workflows.py, after the run, whatever its status, also on exit 1 and 130):
``--junit FILE`` -> write ``junit_xml(report.results, results_path=report.results_path)``
to FILE as UTF-8. When ``in_github_actions()``: print each ``github_annotations(...)``
line followed by a newline, to stdout, or to stderr under ``--json`` (the runner reads
workflow commands from both, and stdout must stay pure JSON lines); and if
``$GITHUB_STEP_SUMMARY`` is set, append ``github_step_summary(...)`` to that file
(UTF-8).

Public API
----------
``junit_xml(results, *, results_path=None) -> str``
    The run as a JUnit XML report, for ``run --junit FILE`` (CONTRACT 2); the format
    that Jenkins, GitLab (``artifacts:reports:junit``) and GitHub test-report actions
    read. Returns a complete document starting with
    ``<?xml version="1.0" encoding="UTF-8"?>``: write it encoded as UTF-8, e.g.
    ``Path(file).write_text(junit_xml(report.results, results_path=report.results_path),
    encoding="utf-8")``. ``results_path`` (str or path, optional) is where the results
    file was written; the results dict does not hold it, so pass it to have it in the
    report's properties.

    Shape: one ``<testsuites>`` holding one ``<testsuite name=WORKFLOW tests failures
    errors skipped time timestamp>``; its ``<properties>`` carry ``run_id``,
    ``results_path`` (when given), ``run_status``, ``workflow_path``,
    ``workflow_sha256``, ``policy``, ``policy_path`` and ``policy_sha256``. Then one
    ``<testcase classname="sandbox-orch.WORKFLOW" name=NODE time=DURATION_S-or-0>`` per
    node, in graph order (``results["graph"]["nodes"]``), each with
    ``<properties>`` (``status``, ``runtime``, ``image``, ``exit_code``, ``attempts``
    when known, and one ``violation`` per thing the sandbox refused, as
    ``"KIND: DETAIL"``), then by status:

    ==========================  ==========================================================
    succeeded                   nothing more
    failed, timed_out           ``<failure message=REASON type=STATUS>STDERR_TAIL</failure>``
    errored                     ``<error message=REASON type="errored">STDERR_TAIL</error>``
    skipped                     ``<skipped message=SKIP_REASON/>``
    cancelled                   ``<skipped message="cancelled: REASON"/>``
    anything else               ``<error type=STATUS>`` (a node that never finished is
                                never reported as a pass)
    ==========================  ==========================================================

    and ``<system-out>`` / ``<system-err>`` with the stdout / stderr tails when not
    empty (for failed, timed_out and errored nodes the stderr tail is the text of the
    ``<failure>``/``<error>`` and is not repeated in ``<system-err>``). Counts: ``tests``
    = testcases; ``failures`` = failed + timed_out; ``errors`` = errored (+ unfinished);
    ``skipped`` = skipped + cancelled; ``time`` = the run's ``duration_s``;
    ``timestamp`` = the run's ``started_at`` as written in the results (ISO-8601, UTC).
    ``<testsuites>`` repeats the counts and time.

    Why cancelled is ``<skipped>``: a node is cancelled only when the operator
    interrupted the run (SIGINT/SIGTERM; CONTRACT 2, exit 130). That is no verdict on
    the node: a ``<failure>`` would blame its command and an ``<error>`` would blame the
    engine, and JUnit has no "cancelled". Skipped with the reason kept visible
    (``"cancelled: run interrupted"``) keeps the counts honest, and the run's own exit
    code (130) is what fails the CI job.

    Built with ``xml.etree.ElementTree``, so ``<``, ``&`` and quotes are escaped by the
    serializer. Characters XML 1.0 cannot carry (control characters other than tab,
    newline and carriage return, lone surrogates, U+FFFE, U+FFFF) are removed from every
    text and attribute, since a node's output may be anything, NUL and escape sequences
    included. In element text, CR and CRLF become LF (XML parsers would do so anyway);
    attribute values keep CR (the serializer writes it as ``&#13;``).

``github_annotations(results) -> list[str]``
    GitHub Actions workflow commands, for when ``GITHUB_ACTIONS=true`` (see
    ``in_github_actions``). One line per list item, with no line break inside any item:
    print each followed by a newline, to stdout. Per node, in graph order::

        ::group::NODE (STATUS)
        ::stop-commands::TOKEN
        status/exit code/attempts/duration line, reason, violations,
        "--- stdout (tail) ---", its lines, "--- stderr (tail) ---", its lines
        ::TOKEN::
        ::endgroup::
        ::error title=WORKFLOW%3A NODE STATUS::REASON [(exit code N)]   (failed, timed_out,
                                                                     errored only)
        ::warning title=...::N sandbox violation(s): ...               (when violations)

    Everything that came from the node (its output, its reason, its violations) is
    printed between ``::stop-commands::TOKEN`` and ``::TOKEN::``, GitHub's documented
    way to print untrusted text: the runner processes no workflow command until it sees
    the token, and TOKEN is a fresh ``secrets.token_hex(16)`` made after the node
    finished, so its output cannot know it. A node printing ``::set-env``,
    ``::add-mask::``, ``::endgroup::`` or ``::stop-commands::`` inside its output
    therefore only prints text. Text outside the block (the group title, the
    ``::error``/``::warning`` lines) is escaped per GitHub's rules: data ``%`` -> ``%25``,
    CR -> ``%0D``, LF -> ``%0A``; properties (``title=``) also ``:`` -> ``%3A`` and
    ``,`` -> ``%2C``; so it can never start a line of its own.

``github_step_summary(results) -> str``
    A Markdown summary (heading, one table row per node in graph order: node, status,
    duration, exit code, reason) for appending to the file named by
    ``$GITHUB_STEP_SUMMARY`` when that is set. Cells are escaped: ``|`` -> ``\\|``,
    Markdown punctuation backslash-escaped, ``&``, ``<``, ``>`` as HTML entities, line
    breaks as spaces, control characters removed, and reasons cut to 300 characters.

``escape_data(text) -> str`` and ``escape_property(text) -> str``
    GitHub's escaping for a workflow command's message and its property values.

``in_github_actions(environ=None) -> bool``
    ``True`` when ``environ`` (default ``os.environ``) has ``GITHUB_ACTIONS=true``; the
    only function here that looks at the environment, and only when not given one.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

# ElementTree and secrets are imported where they are used: every command imports this
# module (through redaction.py) and most never write a report.
if TYPE_CHECKING:
    import xml.etree.ElementTree as ET

__all__ = [
    "escape_data",
    "escape_property",
    "github_annotations",
    "github_step_summary",
    "in_github_actions",
    "junit_xml",
    "markdown_cell",
    "xml_chars",
]

_FAILURES = ("failed", "timed_out")
_ERRORS = ("errored",)
_SKIPS = ("skipped", "cancelled")
_PASSES = ("succeeded",)


@functools.cache
def _not_xml() -> re.Pattern[str]:
    """XML 1.0 Char: #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF].
    Compiled on first use: every command imports this module (through redaction.py)
    and this class costs milliseconds to compile."""
    return re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


# Line breaks as the GitHub runner reads them (.NET ReadLine: CR, LF, CRLF).
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_SUMMARY_REASON_CHARS = 300


# -- shared --------------------------------------------------------------------------


def _nodes_in_order(results: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The nodes in graph order; any node the graph does not list comes after, by name."""
    nodes: Mapping[str, Any] = results.get("nodes") or {}
    order = list((results.get("graph") or {}).get("nodes") or [])
    seen = set(order)
    order += sorted(name for name in nodes if name not in seen)
    for name in order:
        if name in nodes:
            yield name, nodes[name] or {}


def _workflow_name(results: Mapping[str, Any]) -> str:
    return str((results.get("workflow") or {}).get("name") or "workflow")


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def xml_chars(value: Any) -> str:
    """Text with every character XML 1.0 cannot carry removed."""
    return _not_xml().sub("", _text(value))


def _clean_body(value: Any) -> str:
    """Element text: cleaned, and line breaks as LF (what any XML parser makes of a raw
    CR in text anyway, so the report says what its readers will see)."""
    return _LINE_BREAK.sub("\n", xml_chars(value))


def _seconds(value: Any) -> float:
    try:
        return max(float(value), 0.0)
    except (TypeError, ValueError):
        return 0.0


def _reason(node: Mapping[str, Any], status: str) -> str:
    """Why a node ended as it did, never empty for a node that did not succeed."""
    if status in ("skipped",):
        return _text(node.get("skip_reason") or node.get("reason")) or "skipped"
    return _text(node.get("reason")) or status


def _violations(node: Mapping[str, Any]) -> list[str]:
    found = []
    for violation in node.get("violations") or []:
        if isinstance(violation, Mapping):
            found.append(f"{_text(violation.get('kind'))}: {_text(violation.get('detail'))}")
        else:
            found.append(_text(violation))
    return found


# -- JUnit XML -----------------------------------------------------------------------


def junit_xml(
    results: Mapping[str, Any], *, results_path: str | os.PathLike[str] | None = None
) -> str:
    """The run as a JUnit XML document (a str; write it as UTF-8). See the module doc."""
    import xml.etree.ElementTree as ET

    workflow = _workflow_name(results)
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    cases = []
    for name, node in _nodes_in_order(results):
        case, kind = _testcase(workflow, name, node)
        cases.append(case)
        counts["tests"] += 1
        if kind:
            counts[kind] += 1

    took = f"{_seconds(results.get('duration_s')):.3f}"
    attrs = {key: str(value) for key, value in counts.items()}
    root = ET.Element("testsuites", {"name": "sandbox-orch", **attrs, "time": took})
    suite = ET.SubElement(
        root,
        "testsuite",
        {
            "name": xml_chars(workflow),
            **attrs,
            "time": took,
            "timestamp": xml_chars(results.get("started_at")),
        },
    )
    workflow_doc = results.get("workflow") or {}
    policy_doc = results.get("policy") or {}
    _properties(
        suite,
        [
            ("run_id", results.get("run_id")),
            ("results_path", os.fspath(results_path) if results_path is not None else None),
            ("run_status", results.get("status")),
            ("workflow_path", workflow_doc.get("path")),
            ("workflow_sha256", workflow_doc.get("sha256")),
            ("policy", policy_doc.get("name")),
            ("policy_path", policy_doc.get("path")),
            ("policy_sha256", policy_doc.get("sha256")),
        ],
    )
    suite.extend(cases)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _testcase(workflow: str, name: str, node: Mapping[str, Any]) -> tuple[ET.Element, str | None]:
    """One node's <testcase>, and which count it adds to (None: a pass)."""
    import xml.etree.ElementTree as ET

    status = _text(node.get("status")) or "unknown"
    case = ET.Element(
        "testcase",
        {
            "classname": xml_chars(f"sandbox-orch.{workflow}"),
            "name": xml_chars(name),
            "time": f"{_seconds(node.get('duration_s')):.3f}",
        },
    )
    _properties(
        case,
        [
            ("status", status),
            ("runtime", node.get("runtime")),
            ("image", node.get("image")),
            ("exit_code", node.get("exit_code")),
            ("attempts", node.get("attempts")),
            *(("violation", found) for found in _violations(node)),
        ],
    )
    stdout, stderr = _text(node.get("stdout_tail")), _text(node.get("stderr_tail"))
    kind: str | None
    if status in _PASSES:
        kind = None
    elif status in _SKIPS:
        kind = "skipped"
        message = _reason(node, status)
        if status == "cancelled":
            message = f"cancelled: {message}"
        ET.SubElement(case, "skipped", {"message": xml_chars(message)})
    else:
        if status in _FAILURES:
            kind, tag, message = "failures", "failure", _reason(node, status)
        elif status in _ERRORS:
            kind, tag, message = "errors", "error", _reason(node, status)
        else:  # pending, running, or a status this version does not know: not a pass
            kind, tag = "errors", "error"
            message = f"the node did not finish (status {status})"
        verdict = ET.SubElement(
            case, tag, {"message": xml_chars(message), "type": xml_chars(status)}
        )
        verdict.text = _clean_body(stderr) or None
        stderr = ""  # already the verdict's text
    if stdout:
        ET.SubElement(case, "system-out").text = _clean_body(stdout)
    if stderr:
        ET.SubElement(case, "system-err").text = _clean_body(stderr)
    return case, kind


def _properties(parent: ET.Element, pairs: list[tuple[str, Any]]) -> None:
    import xml.etree.ElementTree as ET

    present = [(name, value) for name, value in pairs if value is not None]
    if not present:
        return
    properties = ET.SubElement(parent, "properties")
    for name, value in present:
        ET.SubElement(properties, "property", {"name": name, "value": xml_chars(value)})


# -- GitHub Actions --------------------------------------------------------------------


def in_github_actions(environ: Mapping[str, str] | None = None) -> bool:
    """True when running as a GitHub Actions step (``GITHUB_ACTIONS=true``)."""
    return (os.environ if environ is None else environ).get("GITHUB_ACTIONS") == "true"


def escape_data(text: str) -> str:
    """A workflow command's message: `%`, CR and LF percent-encoded (GitHub's rules)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value: as data, and also `:` and `,`."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_annotations(results: Mapping[str, Any]) -> list[str]:
    """Workflow command lines for GitHub Actions (one per item). See the module doc."""
    import secrets

    workflow = _workflow_name(results)
    lines: list[str] = []
    for name, node in _nodes_in_order(results):
        status = _text(node.get("status")) or "unknown"
        lines.append(f"::group::{escape_data(f'{name} ({status})')}")
        token = secrets.token_hex(16)
        lines.append(f"::stop-commands::{token}")
        lines.extend(_untrusted_lines(node, status))
        lines.append(f"::{token}::")
        lines.append("::endgroup::")
        title = escape_property(f"{workflow}: {name} {status}")
        if status not in _PASSES and status not in _SKIPS:
            message = _reason(node, status)
            exit_code = node.get("exit_code")
            if exit_code is not None and f"code {exit_code}" not in message:
                message += f" (exit code {exit_code})"
            lines.append(f"::error title={title}::{escape_data(message)}")
        violations = _violations(node)
        if violations:
            message = f"{len(violations)} sandbox violation(s): " + "; ".join(violations)
            lines.append(f"::warning title={title}::{escape_data(message)}")
    return lines


def _untrusted_lines(node: Mapping[str, Any], status: str) -> list[str]:
    """What goes inside the stop-commands block: anything the node could influence."""
    facts = [f"status: {status}"]
    if node.get("exit_code") is not None:
        facts.append(f"exit code {node['exit_code']}")
    if node.get("attempts"):
        facts.append(f"attempts {node['attempts']}")
    if node.get("duration_s") is not None:
        facts.append(f"{_seconds(node['duration_s']):.2f}s")
    lines = [", ".join(facts)]
    if status not in _PASSES:
        lines += _split(f"reason: {_reason(node, status)}")
    lines += [f"violation: {found}" for v in _violations(node) for found in _split(v)]
    for stream in ("stdout", "stderr"):
        tail = _text(node.get(f"{stream}_tail"))
        if tail:
            lines.append(f"--- {stream} (tail) ---")
            lines += _split(tail)
    return lines


def _split(text: str) -> list[str]:
    """Lines as the runner reads them, so that no list item holds a line break."""
    lines = _LINE_BREAK.split(text)
    if len(lines) > 1 and lines[-1] == "":
        lines.pop()
    return lines


# -- step summary (Markdown) ----------------------------------------------------------

_STATUS_MARK = {
    "succeeded": "✅",
    "failed": "❌",
    "timed_out": "⏱️",
    "errored": "💥",
    "skipped": "⏭️",
    "cancelled": "🚫",
}
_MARKDOWN_PUNCTUATION = frozenset("\\`*_{}[]()#+-.!|~:\"'=$^")
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def github_step_summary(results: Mapping[str, Any]) -> str:
    """The run as Markdown for $GITHUB_STEP_SUMMARY. See the module doc."""
    status = _text(results.get("status")) or "unknown"
    heading = (
        f"### sandbox-orch: {markdown_cell(_workflow_name(results))} {markdown_cell(status)} "
        f"{_STATUS_MARK.get(status, '')}".rstrip()
    )
    meta = (
        f"run {markdown_cell(results.get('run_id'))} in {_seconds(results.get('duration_s')):.2f}s"
    )
    rows = [
        heading,
        "",
        meta,
        "",
        "| node | status | duration | exit code | reason |",
        "|---|---|---|---|---|",
    ]
    for name, node in _nodes_in_order(results):
        node_status = _text(node.get("status")) or "unknown"
        mark = _STATUS_MARK.get(node_status, "")
        took = node.get("duration_s")
        reason = "" if node_status in _PASSES else _reason(node, node_status)
        if len(reason) > _SUMMARY_REASON_CHARS:
            reason = reason[: _SUMMARY_REASON_CHARS - 1] + "…"
        cells = [
            markdown_cell(name),
            f"{mark} {markdown_cell(node_status)}".strip(),
            "" if took is None else f"{_seconds(took):.2f}s",
            markdown_cell(node.get("exit_code")),
            markdown_cell(reason),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def markdown_cell(value: Any) -> str:
    """Text that stays one inert table cell: no column break, markup, link or HTML."""
    text = " ".join(_LINE_BREAK.split(xml_chars(value)))
    out = []
    for char in text:
        if char in _HTML:
            out.append(_HTML[char])
        elif char in _MARKDOWN_PUNCTUATION:
            out.append("\\" + char)
        elif char == "\t":
            out.append(" ")
        else:
            out.append(char)
    return "".join(out)
