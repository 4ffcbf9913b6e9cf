"""`setup:` where users write it: the schema (refused at validation, FILE:LINE), admission
(its egress granted like the node's own, no secret in the environment, its timeout within
the node's), and what the node's sandbox and container then carry."""

from __future__ import annotations

import asyncio
import dataclasses
import textwrap
from datetime import UTC, datetime

import pytest

from sandbox_orch.admission import admit
from sandbox_orch.brokerpolicy import BrokerGrant
from sandbox_orch.egress.phases import SetupPhase
from sandbox_orch.errors import InputRefused
from sandbox_orch.execution import DURING_SETUP, Attempt, AttemptCancelled, NodeRunner, _phased
from sandbox_orch.loading import validate_document
from sandbox_orch.policy import SecretGrant
from sandbox_orch.scheduler import Scheduler
from sandbox_orch.status import NodeStatus
from sandbox_orch.workflow import Workflow
from sandbox_orch.yamlsafe import load_text

from .helpers import admitted, default_policy, plan_of

POLICY = dataclasses.replace(
    default_policy(), egress=("pypi.org:443", "*.pythonhosted.org:443", "api.example.com:443")
)


def node(body: str) -> str:
    return "version: 1\nname: x\nnodes:\n  a:\n" + "".join(
        f"    {line}\n" for line in textwrap.dedent(body).strip().splitlines()
    )


def refusals(text: str, policy=POLICY, environ=None) -> list[str]:
    with pytest.raises(InputRefused) as caught:
        admit(plan_of(text), policy, environ or {})
    return [str(p) for p in caught.value.problems]


def schema_refusals(text: str) -> list[str]:
    with pytest.raises(InputRefused) as caught:
        validate_document(load_text(text, "wf.yaml"), Workflow)
    return [str(p) for p in caught.value.problems]


def test_a_setup_string_runs_in_sh_and_a_list_as_is():
    text = node(
        """
        command: [python, -m, app]
        setup: {command: "pip install -r r.txt", network: {egress: ["pypi.org:443"]}}
        """
    )
    box = admit(plan_of(text), POLICY, {})["a"]
    assert box.setup_argv == ("/bin/sh", "-c", "pip install -r r.txt")
    assert box.setup_egress == ("pypi.org:443",)
    assert box.egress == ()
    assert box.setup_timeout is None
    listed = node('command: [x]\nsetup: {command: [pip, install, "a b"], timeout: 30s}')
    box = admit(plan_of(listed), POLICY, {})["a"]
    assert box.setup_argv == ("pip", "install", "a b")
    assert box.setup_egress == ()
    assert box.setup_timeout == 30.0
    assert box.describe()["network"] == "none+egress-proxy"
    assert box.describe()["setup_egress"] == []


def test_the_wrapper_gets_the_timeout_the_count_and_setup_before_the_command():
    box = admit(plan_of(node('command: [x, y]\nsetup: {command: "a b", timeout: 1.5s}')), POLICY)[
        "a"
    ]
    assert _phased(box) == ("sandbox-orch-phases", "1.500", "3", "/bin/sh", "-c", "a b")
    box = admit(plan_of(node("command: [x]\nsetup: {command: [i]}")), POLICY)["a"]
    assert _phased(box) == ("sandbox-orch-phases", "-", "1", "i")
    plain = admit(plan_of(node("command: [x]")), POLICY)["a"]
    assert _phased(plain) == ()
    assert "setup_egress" not in plain.describe()
    assert plain.describe()["network"] == "none"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ('{command: ""}', "nodes.a.setup.command: setup needs a command"),
        ("{command: []}", "nodes.a.setup.command: setup needs a command"),
        ('{command: [""]}', "nodes.a.setup.command: setup needs a command"),
        ("{network: {egress: []}}", "nodes.a.setup: required key 'command' is missing"),
        ("{command: x, privileged: true}", "nodes.a.setup.privileged: unknown key"),
        ('{command: x, network: {egress: ["*:443"]}}',
         "nodes.a.setup.network.egress[0]: '*:443' would grant every host: name "
         "the hosts, or a domain suffix such as *.example.com:443"),
    ],
)  # fmt: skip
def test_a_bad_setup_is_refused_at_validation_where_written(setup, message):
    problems = schema_refusals(node(f"command: [x]\nsetup: {setup}"))
    assert problems == [f"wf.yaml:6: {message}"]


def test_setup_egress_is_granted_like_the_nodes_own():
    text = node(
        """
        command: [x]
        setup:
          command: [i]
          network:
            egress: ["pypi.org:443", "files.pythonhosted.org:443", "evil.example:443"]
        """
    )
    assert refusals(text) == [
        "wf.yaml:9: nodes.a.setup.network.egress[2]: node 'a': setup egress to "
        "'evil.example:443' is not granted by the policy"
    ]


def test_a_setup_egress_wider_than_a_policy_suffix_is_refused():
    policy = dataclasses.replace(POLICY, egress=("*.pkg.example.com:443",))
    text = node('command: [x]\nsetup: {command: [i], network: {egress: ["*.example.com:443"]}}')
    assert refusals(text, policy) == [
        "wf.yaml:6: nodes.a.setup.network.egress[0]: node 'a': setup egress to "
        "'*.example.com:443' is not granted by the policy"
    ]


def test_setup_with_a_secret_in_the_environment_is_refused_but_a_brokered_one_is_not():
    env_secret = SecretGrant("TOKEN", "TOKEN", None, ("shell",), ())
    brokered = SecretGrant(
        "KEY",
        "KEY",
        None,
        ("shell",),
        (),
        BrokerGrant(
            upstream="https://api.example.com", header="x-api-key", scheme="", base_url_env="API"
        ),
    )
    policy = dataclasses.replace(POLICY, secrets={"TOKEN": env_secret, "KEY": brokered})
    environ = {"TOKEN": "t" * 20, "KEY": "k" * 20}
    text = node("command: [x]\nsecrets: [KEY, TOKEN]\nsetup: {command: [i]}")
    assert refusals(text, policy, environ) == [
        "wf.yaml:7: nodes.a.setup: node 'a': secret TOKEN is in the node's environment, which "
        "setup code could read: a node with setup gets only brokered secrets"
    ]
    box = admit(
        plan_of(node("command: [x]\nsecrets: [KEY]\nsetup: {command: [i]}")), policy, environ
    )
    assert box["a"].brokered == {"KEY": "https://api.example.com"}
    # Without setup, an environment secret is as before.
    admit(plan_of(node("command: [x]\nsecrets: [TOKEN]")), policy, environ)


@pytest.mark.parametrize(
    ("node_timeout", "setup_timeout", "shown"),
    [("", "601s", "600s"), ("timeout: 10s\n", "11s", "10s"), ("timeout: 10s\n", "10.5s", "10s")],
)
def test_a_setup_timeout_longer_than_the_nodes_is_refused(node_timeout, setup_timeout, shown):
    text = node(f"command: [x]\n{node_timeout}setup: {{command: [i], timeout: {setup_timeout}}}")
    line = 6 + bool(node_timeout)
    setup_s = setup_timeout.removesuffix("s")
    assert refusals(text) == [
        f"wf.yaml:{line}: nodes.a.setup.timeout: node 'a': setup timeout {setup_s}s is longer "
        f"than the node's ({shown})"
    ]


@pytest.mark.parametrize(
    ("node_timeout", "setup_timeout"), [("", "600s"), ("timeout: 10s\n", "10s")]
)
def test_a_setup_timeout_up_to_the_nodes_is_admitted(node_timeout, setup_timeout):
    text = node(f"command: [x]\n{node_timeout}setup: {{command: [i], timeout: {setup_timeout}}}")
    box = admit(plan_of(text), POLICY, {})["a"]
    assert box.setup_timeout == float(setup_timeout.removesuffix("s"))


# --- judging an attempt by its setup phase ------------------------------------------------


class _Proxy:
    def __init__(self, phase):
        self.phase = phase

    def setup_phase(self, node):
        return self.phase


def judged(phase, status=NodeStatus.SUCCEEDED, reason=None, started=100.0):
    from datetime import UTC, datetime

    runner = NodeRunner(backend=None, run_id="r", owner="o", egress=_Proxy(phase))
    now = datetime.now(UTC)
    attempt = Attempt(1, status, now, now, 1.0, exit_code=0, reason=reason)
    planned = plan_of(node("command: [x]\nsetup: {command: [i]}")).nodes["a"]
    runner._judge_setup(attempt, planned, started)
    return attempt


def phase(ended=True, code=0, again=False, violations=()):
    setup = SetupPhase(frozenset(), 0, violations=list(violations), flipped_again=again)
    if ended:
        setup.ended, setup.exit_code, setup.ended_at = True, code, 102.5
    return setup


def test_a_setup_that_ended_well_leaves_the_attempt_as_it_was():
    attempt = judged(phase(violations=[{"kind": "egress", "detail": "d"}]))
    assert (attempt.status, attempt.reason) == (NodeStatus.SUCCEEDED, None)
    assert attempt.setup == {
        "exit_code": 0,
        "duration_s": 2.5,
        "violations": [{"kind": "egress", "detail": "d"}],
    }


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (phase(code=3), "setup failed (exit 3)"),
        (phase(code=255), "setup failed (exit 255)"),
        (phase(ended=False), "setup did not finish"),
        (phase(again=True),
         "the setup phase was ended twice (by setup code): the command did not run"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("status", [NodeStatus.SUCCEEDED, NodeStatus.FAILED])
def test_a_setup_that_failed_fails_the_node(setup, reason, status):
    attempt = judged(setup, status, reason="exited with code 3")
    assert (attempt.status, attempt.reason) == (NodeStatus.FAILED, reason)
    assert attempt.setup["exit_code"] == setup.exit_code
    assert attempt.setup["duration_s"] == (2.5 if setup.ended else None)


@pytest.mark.parametrize("status", [NodeStatus.TIMED_OUT, NodeStatus.CANCELLED])
def test_a_node_stopped_during_setup_says_so(status):
    attempt = judged(phase(ended=False), status, reason="killed after 5s")
    assert (attempt.status, attempt.reason) == (status, "killed after 5s (during setup)")
    attempt = judged(phase(), status, reason="killed after 5s")
    assert (attempt.status, attempt.reason) == (status, "killed after 5s")


def test_no_setup_phase_no_setup_block():
    attempt = judged(None)
    assert attempt.setup is None and attempt.status == NodeStatus.SUCCEEDED


@pytest.mark.parametrize("in_setup", [True, False])
def test_an_interrupt_during_setup_says_so_in_the_results(in_setup):
    """The attempt cancelled in its setup phase keeps saying so once the scheduler gives
    it the run's reason (issue 13's note: Ctrl-C during setup said only 'interrupted')."""
    plan, sandboxes = admitted("version: 1\nname: s\nnodes:\n  a: {command: [x]}\n")
    began = asyncio.Event()

    async def attempt(node, sandbox, number):
        began.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            now = datetime.now(UTC)
            reason = f"cancelled{DURING_SETUP}" if in_setup else "cancelled"
            cancelled = Attempt(1, NodeStatus.CANCELLED, now, now, 0.0, reason=reason)
            raise AttemptCancelled(cancelled) from None

    async def go():
        stop = asyncio.Event()
        scheduler = Scheduler(plan, sandboxes, attempt, lambda event: None)
        running = asyncio.ensure_future(scheduler.run(stop))
        await began.wait()
        stop.set()
        return await running

    record = asyncio.run(go())["a"]
    expected = "run interrupted" + (DURING_SETUP if in_setup else "")
    assert (record.status, record.reason) == (NodeStatus.CANCELLED, expected)
    assert record.last.reason == expected
