"""A node granted a secret prints it, every way the red team tried: whole, in small
pieces interleaved on stdout and stderr, cut by the output tail and by a dropped middle,
and quoted in Python repr by a schema violation, with both quote characters and a
newline in it. It must show in none of the ways out: the results file, `--json` events,
`--ci` lines, JUnit, the GitHub step summary and annotations, the run store, stderr.
Under runc and gVisor."""

import json
import secrets
import sqlite3

import pytest

from ..conftest import REPO, cli, labelled_leftovers, write_workflow

HALF = 1024  # output limit 2 * HALF: head and ring HALF bytes each, both in the 4096-char tail

NODE_SCRIPT = r"""
import json, os, sys
s = os.environ["RED_KEY"]
case = sys.argv[1]
if case == "whole":
    print("the key is", s)
    print(repr(s), json.dumps(s), file=sys.stderr)
elif case == "pieces":
    for i in range(0, len(s), 3):
        sys.stdout.write(s[i:i + 3]); sys.stdout.flush()
        sys.stderr.write(s[i:i + 3]); sys.stderr.flush()
elif case == "cut":
    # The head ends 10 characters into one copy; after a dropped middle, the ring (and
    # so the tail) begins 3 characters into another.
    sys.stdout.write("x" * (HALF - 10) + s + "z" * 50000 + s + "y" * (HALF - len(s) + 3))
elif case == "schema":
    print(json.dumps({"n": s}))
""".replace("HALF", str(HALF))


def workflow(name: str) -> str:
    nodes = "".join(
        f"""
          {case}-{name}:
            runtime: python
            command: ["python", "-c", {json.dumps(NODE_SCRIPT)}, "{case}"]
            secrets: [RED_KEY]
            continue_on_failure: true
        """
        for case in ("whole", "pieces", "cut")
    )
    return f"""
        version: 1
        name: redaction-{name}
        nodes:{nodes}
          schema-{name}:
            runtime: python
            command: ["python", "-c", {json.dumps(NODE_SCRIPT)}, "schema"]
            secrets: [RED_KEY]
            outputs:
              parse:
                format: json
                schema: {{type: object, properties: {{n: {{type: integer}}}}}}
        """


@pytest.fixture(params=["runc", "runsc"])
def policy(request, tmp_path):
    text = (REPO / "policies" / "default.yaml").read_text()
    text = text.replace("oci_runtime: runc", f"oci_runtime: {request.param}")
    text = text.replace(
        "secrets: {}", "secrets:\n  RED_KEY: {from_env: SO_E2E_RED_KEY, runtimes: [python]}"
    )
    text = text.replace("output: 16m", f"output: {2 * HALF}")
    assert "SO_E2E_RED_KEY" in text and f"output: {2 * HALF}" in text
    path = tmp_path / f"redaction-{request.param}.yaml"
    path.write_text(text)
    return path


def forms(value: str) -> list[str]:
    """What would show the secret: whole or escaped, or any 10 characters of it."""
    shown = [value, repr(value)[1:-1], json.dumps(value)[1:-1], json.dumps(repr(value))[1:-1]]
    return shown + [value[i : i + 10] for i in range(len(value) - 10)]


def test_a_node_printing_its_secret_leaks_it_nowhere(policy, workdir, built_images, docker_client):
    token = secrets.token_hex(8)
    value = f"sk-red'team\"{token}\nsecond-line-{token}"
    name = secrets.token_hex(3)
    path = write_workflow(workdir, workflow(name))
    summary = workdir / "step-summary.md"
    junit = workdir / "junit.xml"
    env = {
        "SO_E2E_RED_KEY": value,
        "GITHUB_ACTIONS": "true",
        "GITHUB_STEP_SUMMARY": str(summary),
    }
    results_path = workdir / "results.json"
    common = ("--policy", str(policy), "--results", str(results_path), "--junit", str(junit))
    ci = cli("run", str(path), "--ci", "--keep-going", *common, env=env)
    results_text = results_path.read_text()
    results = json.loads(results_text)
    as_json = cli("run", str(path), "--json", "--keep-going", *common, env=env)

    # The attacks happened: every node ran and printed (the tails show the markers).
    nodes = results["nodes"]
    mark = "[REDACTED:RED_KEY]"
    assert nodes[f"whole-{name}"]["status"] == "succeeded", nodes
    assert mark in nodes[f"whole-{name}"]["stdout_tail"]
    assert mark in nodes[f"whole-{name}"]["stderr_tail"]
    assert mark in nodes[f"pieces-{name}"]["stdout_tail"]
    assert mark in nodes[f"pieces-{name}"]["stderr_tail"]
    cut = nodes[f"cut-{name}"]["stdout_tail"]
    assert "bytes of output dropped" in cut and cut.count(mark) == 2, cut[-300:]
    assert cut.endswith("y" * 100)
    schema = nodes[f"schema-{name}"]
    assert schema["status"] == "failed" and "is not of type 'integer'" in schema["reason"]
    assert mark in schema["reason"]

    store = b"".join(p.read_bytes() for p in (workdir / "store").rglob("*") if p.is_file()).decode(
        "utf-8", "replace"
    )
    places = {
        "results file": results_text,
        "--ci stdout": ci.stdout,
        "--ci stderr": ci.stderr,
        "--json stdout": as_json.stdout,
        "--json stderr": as_json.stderr,
        "junit": junit.read_text(),
        "step summary": summary.read_text(),
        "run store files": store,
    }
    assert "::error" in ci.stdout and "::error" in as_json.stderr  # annotations were printed
    for where, text in places.items():
        for form in forms(value):
            assert form not in text, f"{where} shows {form!r}"
    # The store's rows, read back through SQLite (not only its bytes).
    with sqlite3.connect(next((workdir / "store").rglob("runs.db"))) as db:
        rows = db.execute("SELECT results FROM runs").fetchall()
        rows += db.execute("SELECT body FROM events").fetchall()
        rows += db.execute("SELECT reason FROM nodes").fetchall()
    assert rows
    for (cell,) in rows:
        assert cell is None or all(form not in cell for form in forms(value))
    for run in (results["run_id"], json.loads(as_json.stdout.splitlines()[0])["run_id"]):
        assert labelled_leftovers(docker_client, run) == []
