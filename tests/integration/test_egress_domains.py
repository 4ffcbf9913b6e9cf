"""Egress by domain on the real engine, under runc and gVisor (issue 13, item 3).

A node granted a domain suffix asks its proxy for names outside it (a look-alike that
merely ends in the same letters, and the suffix's own apex): both are refused on the name
and recorded as violations in the results. A name under the suffix would need DNS, which
this machine may lack (the unit tests cover it with an injected resolver); here the
private-name opt-in stands in for a name that goes through: `localhost`, opted in, reaches
a server on the host, while the same server is refused by address to a node whose policy
does not opt it in.
"""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import pytest

from tests.conftest import REPO, labelled_leftovers, run_workflow

pytestmark = pytest.mark.engine

PROBE = r"""
import sys, urllib.error, urllib.request
opener = urllib.request.build_opener(
    urllib.request.ProxyHandler({"http": "http://127.0.0.1:3128"}))
for url in sys.argv[1:]:
    try:
        with opener.open(url, timeout=30) as answer:
            print("ASKED", url, answer.status, answer.read().decode().strip())
    except urllib.error.HTTPError as error:
        print("ASKED", url, error.code, error.read().decode().strip())
"""


class _Mirror(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"mirror-ok\n"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args) -> None:
        pass


@pytest.fixture
def mirror():
    """An HTTP server on the host's loopback: the 'internal mirror'."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Mirror)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def write_policy(directory: Path, runtime: str, port: int, opt_in: bool) -> Path:
    text = (REPO / "policies" / "default.yaml").read_text()
    text = text.replace("oci_runtime: runc", f"oci_runtime: {runtime}")
    network = f'egress: ["*.example.com:80", "localhost:{port}"]'
    if opt_in:
        network += f'\n  private_names: ["localhost:{port}"]'
    text = text.replace("egress: []", network)
    assert f"oci_runtime: {runtime}" in text and "*.example.com:80" in text
    path = directory / f"policy-{runtime}-{opt_in}.yaml"
    path.write_text(text)
    return path


def asked(node: dict) -> dict[str, str]:
    lines = [x.split(" ", 3) for x in node["stdout_tail"].splitlines() if x.startswith("ASKED ")]
    return {url: f"{status} {body}" for _, url, status, body in lines}


@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_a_suffix_grant_refuses_other_names_and_the_opt_in_reaches_a_private_name(
    runtime, mirror, workdir, docker_client, built_images
):
    evil, apex, local = (
        "http://evilexample.com/",
        "http://example.com/",
        f"http://localhost:{mirror}/",
    )
    text = f"""
        version: 1
        name: egress-domains
        nodes:
          probe:
            runtime: python
            network: {{egress: ["*.example.com:80", "localhost:{mirror}"]}}
            command: [python3, -c, {json.dumps(PROBE)}, "{evil}", "{apex}", "{local}"]
    """
    result = run_workflow(
        workdir, text, "--policy", str(write_policy(workdir, runtime, mirror, opt_in=True))
    )
    assert result.results is not None, result.stderr
    node = result.node("probe")
    assert node["status"] == "succeeded", result.stderr + node["stderr_tail"]
    assert node["sandbox"]["oci_runtime"] == runtime
    proxy = "sandbox-orch egress proxy: "
    assert asked(node) == {
        evil: f"403 {proxy}evilexample.com:80 is not granted to node 'probe'",
        apex: f"403 {proxy}example.com:80 is not granted to node 'probe' "
        "(*.example.com matches names below it only)",
        local: "200 mirror-ok",
    }
    assert node["violations"] == [
        {"kind": "egress", "detail": "evilexample.com:80 is not granted to node 'probe'"},
        {
            "kind": "egress",
            "detail": "example.com:80 is not granted to node 'probe' "
            "(*.example.com matches names below it only)",
        },
    ]
    assert labelled_leftovers(docker_client, result.results["run_id"]) == []


@pytest.mark.parametrize("runtime", ["runc"])
def test_without_the_opt_in_a_name_resolving_to_loopback_is_refused(
    runtime, mirror, workdir, docker_client, built_images
):
    """The control: the same grant and server, no `private_names`: refused by address."""
    local = f"http://localhost:{mirror}/"
    text = f"""
        version: 1
        name: egress-no-opt-in
        nodes:
          probe:
            runtime: python
            network: {{egress: ["localhost:{mirror}"]}}
            command: [python3, -c, {json.dumps(PROBE)}, "{local}"]
    """
    result = run_workflow(
        workdir, text, "--policy", str(write_policy(workdir, runtime, mirror, opt_in=False))
    )
    assert result.results is not None, result.stderr
    node = result.node("probe")
    detail = "localhost resolves to a non-public address (127.0.0.1): refused"
    assert asked(node) == {local: f"403 sandbox-orch egress proxy: {detail}"}
    assert node["violations"] == [{"kind": "egress", "detail": detail}]
    assert labelled_leftovers(docker_client, result.results["run_id"]) == []
