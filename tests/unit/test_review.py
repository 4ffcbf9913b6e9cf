"""`sandbox-orch policy review`: the rules (against the fixture corpus in tests/policy/),
the shipped policies, the output formats, --against, --workflow and exit codes."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from sandbox_orch import review as reviewing
from sandbox_orch.cli import main
from sandbox_orch.policy import DEFAULT_POLICY, POLICIES_DIR, load_policy

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "policy"
PERMISSIVE = POLICIES_DIR / "examples" / "permissive.yaml"
SHIPPED = [DEFAULT_POLICY, POLICIES_DIR / "agents.yaml", POLICIES_DIR / "ci.yaml"]
HELLO = REPO / "configs" / "examples" / "hello.yaml"
MARKER = re.compile(r"#\s*<-\s*(SO\d{3})")

FAIL_FILES = sorted(CORPUS.glob("SO*.fail.yaml"))
PASS_FILES = sorted(CORPUS.glob("SO*.pass.yaml"))


def rule_of(path: Path) -> str:
    return path.name.split("-", 1)[0]


def findings_of(path: Path) -> list[reviewing.Finding]:
    return reviewing.review(load_policy(path))


def review_cli(*args: str, columns: int | None = None) -> tuple[int, str, str]:
    env = {"COLUMNS": str(columns)} if columns else None
    result = CliRunner().invoke(main, ["policy", "review", *map(str, args)], env=env)
    return result.exit_code, result.stdout, result.stderr


# ---------------------------------------------------------------- the corpus


def test_every_rule_has_a_failing_and_a_passing_fixture():
    assert {rule_of(p) for p in FAIL_FILES} == set(reviewing.RULES)
    assert {rule_of(p) for p in PASS_FILES} == set(reviewing.RULES)
    for passing in PASS_FILES:
        assert passing.with_name(passing.name.replace(".pass.", ".fail.")).exists(), passing


@pytest.mark.parametrize("path", FAIL_FILES, ids=lambda p: p.stem)
def test_fail_fixture_trips_its_rule_on_the_marked_lines(path):
    rule = rule_of(path)
    marked = {
        number
        for number, text in enumerate(path.read_text().splitlines(), start=1)
        if (match := MARKER.search(text)) and match.group(1) == rule
    }
    assert marked, f"{path.name} marks no line with `# <- {rule}`"
    found = findings_of(path)
    lines = {f.line for f in found if f.id == rule}
    assert lines == marked, [(f.id, f.line, f.title) for f in found]
    for finding in found:
        assert finding.severity == reviewing.RULES[finding.id].severity
        assert finding.file == str(path)
        assert finding.title and finding.why and finding.fix


@pytest.mark.parametrize("path", PASS_FILES, ids=lambda p: p.stem)
def test_pass_fixture_does_not_trip_its_rule(path):
    rule = rule_of(path)
    found = [f for f in findings_of(path) if f.id == rule]
    assert not found, [(f.line, f.title) for f in found]


def test_rule_table_in_the_module_docstring_matches_the_rules():
    documented = dict(re.findall(r"^\| (SO\d{3}) \| (\w+) +\|", reviewing.__doc__, re.M))
    assert documented == {rule.id: rule.severity for rule in reviewing.RULES.values()}


def test_findings_are_sorted_by_severity_then_line():
    found = findings_of(PERMISSIVE)
    keys = [(reviewing.SEVERITIES.index(f.severity), f.line) for f in found]
    assert keys == sorted(keys)


@pytest.mark.parametrize(
    ("host", "scope"),
    [
        ("*.github.io", "broad"),  # the Public Suffix List's private section
        ("*.githubusercontent.com", "broad"),
        ("*.s3.amazonaws.com", "broad"),
        ("*.amazonaws.com", "broad"),  # not in the list, but anyone's: our own list
        ("*.CloudFront.NET.", "broad"),  # normalised as the proxy matches it
        ("*.me.github.io", "subdomains"),  # one user's site
        ("*.example.com", "subdomains"),
        ("*.pkg.example.com", "subdomains"),
        ("*.bücher.example", "subdomains"),
        ("api.example.com", None),
    ],
)
def test_wildcard_scope(host, scope):
    assert reviewing._wildcard_scope(host) == scope


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("10.0.0.1", "10.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("010.0.0.1", "8.0.0.1"),
        ("example.com", None),
        ("cafe.example", None),
    ],
)
def test_ip_literals_in_every_spelling(host, address):
    parsed = reviewing._ip_of(host)
    assert (str(parsed[0]) if parsed else None) == address


# ---------------------------------------------------------------- shipped policies


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_policies_review_clean_at_high(path):
    serious = [f for f in findings_of(path) if f.severity in ("critical", "high")]
    assert not serious, serious
    code, out, _ = review_cli(path, "--fail-on", "high")
    assert code == 0, out
    assert "pass: nothing at or above high" in out


def test_permissive_example_trips_many_rules_and_fails_at_high():
    found = findings_of(PERMISSIVE)
    ids = {f.id for f in found}
    assert {"SO102", "SO107", "SO108", "SO105", "SO201", "SO202", "SO204", "SO301"} <= ids
    assert {"SO401", "SO403", "SO404", "SO501", "SO610", "SO611"} <= ids
    assert sum(f.severity == "critical" for f in found) >= 3
    code, out, _ = review_cli(PERMISSIVE, "--fail-on", "high")
    assert code == 1
    assert "FAIL" in out and "SO108" in out
    assert f"{PERMISSIVE}:12" in out  # the metadata egress, with its file:line


def test_exit_codes_of_fail_on():
    assert review_cli(PERMISSIVE)[0] == 0  # without --fail-on: findings never fail
    assert review_cli(DEFAULT_POLICY, "--fail-on", "low")[0] == 1  # SO302: runc
    assert review_cli(POLICIES_DIR / "ci.yaml", "--fail-on", "low")[0] == 0
    assert review_cli(POLICIES_DIR / "ci.yaml", "--fail-on", "info")[0] == 1
    assert review_cli(PERMISSIVE, "--fail-on", "CRITICAL")[0] == 1


def test_real_command_line_in_a_child_process():
    from tests.conftest import cli

    done = cli("policy", "review", str(PERMISSIVE), "--fail-on", "critical", "--format", "json")
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["failed"] is True


# ---------------------------------------------------------------- refusals (exit 2)


def test_schema_invalid_policy_exits_2_with_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: bad\nisolation:\n  privileged: true\n")
    code, out, err = review_cli(bad)
    assert code == 2 and out == ""
    assert f"{bad}:4: isolation.privileged: unknown key" in err


def test_schema_invalid_old_policy_exits_2(tmp_path):
    bad = tmp_path / "old.yaml"
    bad.write_text("version: 1\nname: old\nlimits: {cpus: lots}\n")
    code, _, err = review_cli(DEFAULT_POLICY, "--against", bad)
    assert code == 2 and f"{bad}:3: limits.cpus" in err


def test_missing_policy_file_exits_2(tmp_path):
    code, _, err = review_cli(tmp_path / "nope.yaml")
    assert code == 2 and "cannot read" in err


def test_workflow_refused_by_the_policy_exits_2(tmp_path):
    workflow = tmp_path / "wf.yaml"
    workflow.write_text("version: 1\nname: x\nnodes:\n  a:\n    runtime: claude\n    prompt: hi\n")
    code, _, err = review_cli(DEFAULT_POLICY, "--workflow", workflow)
    assert code == 2
    assert f"{workflow}:5: nodes.a.runtime: node 'a': runtime 'claude' is not granted" in err


# ---------------------------------------------------------------- --workflow


def test_workflow_adds_each_nodes_effective_privileges():
    code, out, _ = review_cli(DEFAULT_POLICY, "--workflow", HELLO, "--format", "json")
    assert code == 0
    document = json.loads(out)
    nodes = document["privileges"]
    assert set(nodes) == {"greet", "whoami", "python"}
    greet = nodes["greet"]
    assert greet["runtime"] == "shell"
    assert greet["image"] == "sandbox-orch/shell"
    assert greet["user"] == "10001:10001" and greet["oci_runtime"] == "runc"
    assert greet["network"] == "none"
    assert greet["limits"]["timeout_s"] == 60  # the workflow's default, under the ceiling
    assert nodes["python"]["image"] == "sandbox-orch/python"
    assert document["workflow"] == str(HELLO)


def test_workflow_privileges_are_whatever_describe_says():
    from tests.unit.helpers import admitted

    plan, sandboxes = admitted("version: 1\nname: x\nnodes:\n  a: {command: [x]}\n")
    privileges = reviewing.privileges(plan, sandboxes)
    assert privileges == {"a": {"runtime": "shell", **sandboxes["a"].describe()}}


def test_workflow_table_lists_nodes():
    code, out, _ = review_cli(DEFAULT_POLICY, "--workflow", HELLO)
    assert code == 0
    assert "node privileges" in out
    for text in ("greet", "whoami", "python", "sandbox-orch/python", "10001:10001"):
        assert text in out


# ---------------------------------------------------------------- --against


def changes(old: Path, new: Path) -> list[reviewing.Change]:
    return reviewing.compare(load_policy(old), load_policy(new))


def summaries(found: list[reviewing.Change], direction: str) -> set[str]:
    return {c.summary for c in found if c.direction == direction}


def test_against_default_lists_what_permissive_widens():
    found = changes(DEFAULT_POLICY, PERMISSIVE)
    widened = summaries(found, "widens")
    expected = {
        "runtime claude granted",
        "runtime codex granted",
        "image * granted",
        "egress *.githubusercontent.com:443 granted",
        "egress 169.254.169.254:80 granted",
        "mount .. granted (rw)",
        "mount . ro -> rw",
        "tmpfs /tmp 64m -> 8g",
        "limits.memory 2g -> 256g",
        "defaults.timeout 10m -> 72h",
    }
    assert expected <= widened, widened
    assert any(s.startswith("secret ANTHROPIC_API_KEY granted") for s in widened)
    assert "secret DEPLOY_TOKEN granted (to python; egress none)" in widened
    assert not summaries(found, "narrows")  # images `*` covers the old sandbox-orch/* ones
    by_summary = {c.summary: c for c in found}
    metadata = by_summary["egress 169.254.169.254:80 granted"]
    assert (metadata.file, metadata.line) == (str(PERMISSIVE), 12)


def test_against_permissive_lists_what_default_narrows():
    found = changes(PERMISSIVE, DEFAULT_POLICY)
    narrowed = summaries(found, "narrows")
    assert {"runtime claude no longer granted", "mount .. no longer granted"} <= narrowed
    assert {"mount . rw -> ro", "secret DEPLOY_TOKEN no longer granted"} <= narrowed
    assert "egress *.githubusercontent.com:443 no longer granted" in narrowed
    assert not summaries(found, "widens")
    removal = next(c for c in found if c.summary == "mount .. no longer granted")
    assert (removal.file, removal.line) == (str(PERMISSIVE), 14)  # removals: in the old file
    ceiling = next(c for c in found if c.summary == "limits.cpus 64 -> 2")
    assert (ceiling.file, ceiling.line) == (str(DEFAULT_POLICY), 19)


def test_against_from_the_command_line():
    code, out, _ = review_cli(PERMISSIVE, "--against", DEFAULT_POLICY, "--format", "json")
    document = json.loads(out)
    assert code == 0
    assert document["against"]["path"] == str(DEFAULT_POLICY)
    directions = {c["direction"] for c in document["changes"]}
    assert "widens" in directions
    code, out, _ = review_cli(DEFAULT_POLICY, "--against", PERMISSIVE)
    words = " ".join(out.split())  # the summary wraps at the width when the paths are deep
    assert code == 0 and "narrows" in words and "0 widen, " in words


@pytest.mark.parametrize("columns", [60, 80, 120])
def test_a_narrow_log_never_splits_the_direction_or_area_of_a_change(tmp_path, columns):
    """A CI log's width and a deep checkout path squeeze the table: only the prose wraps."""
    deep = tmp_path.joinpath(*["a-rather-long-directory-name"] * 4)
    deep.mkdir(parents=True)
    old = deep / "permissive.yaml"
    old.write_text(PERMISSIVE.read_text())
    code, out, _ = review_cli(DEFAULT_POLICY, "--against", old, columns=columns)
    assert code == 0
    rows = [line.split() for line in out.splitlines() if line.split()[:1] == ["narrows"]]
    changes = json.loads(review_cli(DEFAULT_POLICY, "--against", old, "--format", "json")[1])
    narrowed = [c for c in changes["changes"] if c["direction"] == "narrows"]
    assert len(rows) == len(narrowed) > 0
    assert {row[1] for row in rows} == {c["area"] for c in narrowed}


def write_policy(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_against_isolation_env_secrets_and_pattern_coverage(tmp_path):
    old = write_policy(
        tmp_path,
        "old",
        """\
        version: 1
        name: old
        runtimes: [claude]
        images: ["sandbox-orch/*"]
        isolation: {oci_runtime: runsc, user: "10001:10001"}
        env:
          deny: [AWS_PROFILE, GIT_SSH_COMMAND]
        secrets:
          KEY: {from_env: KEY, runtimes: [claude], egress: ["api.anthropic.com:443"]}
        """,
    )
    new = write_policy(
        tmp_path,
        "new",
        """\
        version: 1
        name: old
        runtimes: [claude]
        images: ["sandbox-orch/python"]
        isolation: {oci_runtime: runc, user: "1000:1000"}
        env:
          deny: [aws_profile, NPM_CONFIG_REGISTRY]
        secrets:
          KEY: {from_env: KEY, runtimes: [claude, shell]}
        """,
    )
    found = changes(old, new)
    widened, narrowed = summaries(found, "widens"), summaries(found, "narrows")
    assert "oci_runtime runsc -> runc: nodes leave gVisor" in widened
    assert "user 10001:10001 -> 1000:1000 (a likely host account)" in widened
    assert "env GIT_SSH_COMMAND no longer denied" in widened
    assert "env NPM_CONFIG_REGISTRY now denied" in narrowed
    assert "secret KEY now granted to shell" in widened
    # a missing egress list is an empty one: nodes holding KEY now get no egress
    assert "secret KEY no longer sent to api.anthropic.com:443" in narrowed
    # sandbox-orch/python is covered by the old sandbox-orch/*: not a widening
    assert not any("sandbox-orch/python" in s for s in widened)
    assert "image sandbox-orch/* no longer granted" in narrowed
    denied = next(c for c in found if c.summary == "env GIT_SSH_COMMAND no longer denied")
    assert (denied.file, denied.line) == (str(old), 7)
    back = changes(new, old)
    assert "oci_runtime runc -> runsc: nodes run under gVisor" in summaries(back, "narrows")


def test_against_itself_changes_nothing():
    assert changes(DEFAULT_POLICY, DEFAULT_POLICY) == []
    code, out, _ = review_cli(DEFAULT_POLICY, "--against", DEFAULT_POLICY)
    assert code == 0 and "no change in what the policy grants" in out


# ---------------------------------------------------------------- json and SARIF


def test_json_document_shape():
    code, out, _ = review_cli(PERMISSIVE, "--format", "json", "--fail-on", "high")
    assert code == 1
    document = json.loads(out)
    assert document["schema"] == "sandbox-orch/policy-review@1"
    assert document["policy"]["name"] == "permissive-example"
    assert document["failed"] is True and document["fail_on"] == "high"
    assert document["privileges"] is None and document["changes"] is None
    summary = document["summary"]
    assert (
        summary["total"]
        == len(document["findings"])
        == sum(summary[s] for s in reviewing.SEVERITIES)
    )
    for finding in document["findings"]:
        assert set(finding) == {"id", "severity", "file", "line", "field", "title", "why", "fix"}
        assert finding["file"] == str(PERMISSIVE) and isinstance(finding["line"], int)


# A minimal subset of the SARIF 2.1.0 schema: the properties code-scanning tools rely on.
SARIF_SUBSET_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["$schema", "version", "runs"],
    "properties": {
        "$schema": {"type": "string", "format": "uri"},
        "version": {"const": "2.1.0"},
        "runs": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["tool", "results"],
                "properties": {
                    "tool": {
                        "type": "object",
                        "required": ["driver"],
                        "properties": {"driver": {"$ref": "#/definitions/driver"}},
                    },
                    "results": {"type": "array", "items": {"$ref": "#/definitions/result"}},
                    "properties": {"type": "object"},
                },
            },
        },
    },
    "definitions": {
        "message": {
            "type": "object",
            "required": ["text"],
            "properties": {"text": {"type": "string", "minLength": 1}},
        },
        "driver": {
            "type": "object",
            "required": ["name", "version", "informationUri", "rules"],
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "version": {"type": "string", "minLength": 1},
                "informationUri": {"type": "string", "format": "uri"},
                "rules": {"type": "array", "items": {"$ref": "#/definitions/rule"}},
            },
        },
        "rule": {
            "type": "object",
            "required": [
                "id",
                "shortDescription",
                "fullDescription",
                "help",
                "defaultConfiguration",
                "properties",
            ],
            "properties": {
                "id": {"type": "string", "pattern": "^SO[0-9]{3}$"},
                "shortDescription": {"$ref": "#/definitions/message"},
                "fullDescription": {"$ref": "#/definitions/message"},
                "help": {"$ref": "#/definitions/message"},
                "defaultConfiguration": {
                    "type": "object",
                    "required": ["level"],
                    "properties": {"level": {"enum": ["none", "note", "warning", "error"]}},
                },
                "properties": {
                    "type": "object",
                    "required": ["security-severity"],
                    "properties": {
                        "security-severity": {
                            "type": "string",
                            "pattern": "^(10\\.0|[0-9]\\.[0-9])$",
                        },
                    },
                },
            },
        },
        "result": {
            "type": "object",
            "required": ["ruleId", "level", "message", "locations"],
            "properties": {
                "ruleId": {"type": "string"},
                "ruleIndex": {"type": "integer", "minimum": 0},
                "level": {"enum": ["none", "note", "warning", "error"]},
                "message": {"$ref": "#/definitions/message"},
                "locations": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["physicalLocation"],
                        "properties": {
                            "physicalLocation": {
                                "type": "object",
                                "required": ["artifactLocation", "region"],
                                "properties": {
                                    "artifactLocation": {
                                        "type": "object",
                                        "required": ["uri"],
                                        "properties": {"uri": {"type": "string", "minLength": 1}},
                                    },
                                    "region": {
                                        "type": "object",
                                        "required": ["startLine"],
                                        "properties": {
                                            "startLine": {"type": "integer", "minimum": 1}
                                        },
                                    },
                                },
                            }
                        },
                    },
                },
            },
        },
    },
}


def test_sarif_is_valid_and_complete():
    import jsonschema  # a test dependency: never skipped, so a green run means it ran

    code, out, _ = review_cli(PERMISSIVE, "--format", "sarif", "--against", DEFAULT_POLICY)
    assert code == 0
    log = json.loads(out)
    validator = jsonschema.Draft7Validator(
        SARIF_SUBSET_SCHEMA, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )
    errors = sorted(validator.iter_errors(log), key=str)
    assert not errors, [e.message for e in errors]
    run = log["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == list(reviewing.RULES)
    findings = findings_of(PERMISSIVE)
    assert len(run["results"]) == len(findings)
    for result, finding in zip(run["results"], findings, strict=True):
        assert result["ruleId"] == finding.id
        assert rules[result["ruleIndex"]]["id"] == finding.id
        location = result["locations"][0]["physicalLocation"]
        assert location["artifactLocation"]["uri"] == PERMISSIVE.as_uri()
        assert location["region"]["startLine"] == finding.line
    levels = {r["ruleId"]: r["level"] for r in run["results"]}
    assert levels["SO108"] == "error" and levels["SO105"] == "warning"
    assert levels["SO601"] == "note"
    assert run["properties"]["changes"]  # --against rides along in the run's property bag


def test_sarif_uri_of_a_relative_path_is_relative():
    assert reviewing.artifact_uri("policies/my policy.yaml") == "policies/my%20policy.yaml"
    assert reviewing.artifact_uri("/etc/p.yaml") == "file:///etc/p.yaml"


def test_how_a_secret_is_delivered_is_compared(tmp_path):
    """The environment widens (the node holds the value), the broker narrows, another
    broker setting is a change a reviewer reads."""
    body = """\
        version: 1
        name: {name}
        runtimes: [claude]
        images: []
        isolation: {{oci_runtime: runsc, user: "10001:10001", tmpfs: {{/tmp: 64m}}}}
        network: {{egress: []}}
        mounts: []
        env: {{deny: []}}
        secrets:
          ANTHROPIC_API_KEY:
            from_env: ANTHROPIC_API_KEY
            runtimes: [claude]
            egress: []
        {broker}
        limits: {{cpus: 2, memory: 2g, pids: 512, timeout: 30m, output: 16m, artifacts: 1g}}
        defaults: {{cpus: 1, memory: 512m, pids: 256, timeout: 10m}}
        """
    indent = " " * 4
    broker = indent + 'broker: {{upstream: "https://{host}", header: x-api-key}}'
    env = write_policy(tmp_path, "env", body.format(name="p", broker=""))
    brokered = write_policy(
        tmp_path, "brokered", body.format(name="p", broker=broker.format(host="api.anthropic.com"))
    )
    gateway = write_policy(
        tmp_path, "gateway", body.format(name="p", broker=broker.format(host="gw.example.com"))
    )

    def changes(new: Path, old: Path) -> list[tuple[str, str]]:
        document = json.loads(review_cli(new, "--against", old, "--format", "json")[1])
        return [(c["direction"], c["summary"]) for c in document["changes"]]

    to_broker = "secret ANTHROPIC_API_KEY now brokered to https://api.anthropic.com"
    assert changes(brokered, env) == [("narrows", to_broker)]
    to_env = "secret ANTHROPIC_API_KEY now in its node's environment (was brokered)"
    assert changes(env, brokered) == [("widens", to_env)]
    changed = "secret ANTHROPIC_API_KEY: broker settings changed"
    assert changes(gateway, brokered) == [("changes", changed)]
    assert changes(brokered, brokered) == []
